"""jobs that wait for other jobs, and flows of them (issue 12)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flows",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner_id", sa.String(length=40), nullable=False),
        sa.Column("callback_url", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["owner_id"], ["owners.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_flows_owner_id", "flows", ["owner_id"], unique=False)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("flow_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("stage", sa.String(length=64), nullable=True))
        batch_op.create_foreign_key(
            "fk_jobs_flow_id_flows", "flows", ["flow_id"], ["id"], ondelete="CASCADE"
        )
        batch_op.create_index("ix_jobs_flow_id", ["flow_id"], unique=False)
    op.create_table(
        "job_dependencies",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("after_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["after_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "after_id"),
    )
    op.create_index("ix_job_dependencies_after_id", "job_dependencies", ["after_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_job_dependencies_after_id", table_name="job_dependencies")
    op.drop_table("job_dependencies")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_flow_id")
        batch_op.drop_constraint("fk_jobs_flow_id_flows", type_="foreignkey")
        batch_op.drop_column("stage")
        batch_op.drop_column("flow_id")
    op.drop_index("ix_flows_owner_id", table_name="flows")
    op.drop_table("flows")
