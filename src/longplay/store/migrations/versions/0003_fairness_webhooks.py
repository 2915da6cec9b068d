"""owner tiers and limits, scheduling, deadlines, deduplication, webhooks

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import base64
import secrets

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("owners", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("tier", sa.String(length=32), nullable=False, server_default="standard")
        )
        batch_op.add_column(sa.Column("max_running", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_queued", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("submit_rate", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("webhook_secret", sa.String(length=64), nullable=True))
    owners = sa.table("owners", sa.column("id", sa.String), sa.column("webhook_secret", sa.String))
    connection = op.get_bind()
    for (owner_id,) in connection.execute(sa.select(owners.c.id)).all():
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        connection.execute(
            owners.update().where(owners.c.id == owner_id).values(webhook_secret=secret)
        )
    with op.batch_alter_table("owners", schema=None) as batch_op:
        batch_op.alter_column("webhook_secret", existing_type=sa.String(length=64), nullable=False)

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("run_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("deadline", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("callback_url", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("callback_events", JSON, nullable=True))
        batch_op.create_index("ix_jobs_owner_status", ["owner_id", "status"], unique=False)
        batch_op.create_index("ix_jobs_content_key", ["owner_id", "content_key"], unique=False)
    # Jobs queued before this revision are already with the broker.
    jobs = sa.table(
        "jobs",
        sa.column("status", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("dispatched_at", sa.DateTime(timezone=True)),
    )
    connection.execute(
        jobs.update().where(jobs.c.status == "queued").values(dispatched_at=jobs.c.created_at)
    )

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_webhook_deliveries_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_job_id"))
    op.drop_table("webhook_deliveries")

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_content_key")
        batch_op.drop_index("ix_jobs_owner_status")
        for column in (
            "callback_events",
            "callback_url",
            "dispatched_at",
            "deadline",
            "run_at",
            "content_key",
        ):
            batch_op.drop_column(column)

    with op.batch_alter_table("owners", schema=None) as batch_op:
        for column in ("webhook_secret", "submit_rate", "max_queued", "max_running", "tier"):
            batch_op.drop_column(column)
