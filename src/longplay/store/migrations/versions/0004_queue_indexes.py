"""indexes for a deep queue and a long history

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Indexes that gain columns: name, columns before, columns after.
WIDER = (
    ("ix_jobs_owner_created", ["owner_id", "created_at"], ["owner_id", "created_at", "id"]),
    ("ix_jobs_owner_status", ["owner_id", "status"], ["owner_id", "status", "created_at", "id"]),
    (
        "ix_jobs_status_queue",
        ["status", "resource", "priority_rank", "created_at"],
        ["status", "resource", "priority_rank", "created_at", "id"],
    ),
)
NEW = (
    (
        "ix_jobs_queue_owner",
        ["status", "resource", "owner_id", "priority_rank", "created_at", "id"],
    ),
    ("ix_jobs_status_dispatched", ["status", "dispatched_at"]),
)
# Partial: only the jobs that have a value in the column.
SCHEDULE = ("run_at", "retry_at", "deadline")
# PostgreSQL: few jobs are queued and few need a GPU, and the two go together. Without
# their joint counts the planner takes the queued GPU jobs for a tenth of what they are,
# and sorts them all where it should read the first few in the index's order.
STATISTICS = "jobs_status_resource"


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        for name, _, after in WIDER:
            batch_op.drop_index(name)
            batch_op.create_index(name, after, unique=False)
        for name, columns in NEW:
            batch_op.create_index(name, columns, unique=False)
        for column in SCHEDULE:
            present = sa.text(f"{column} IS NOT NULL")
            batch_op.create_index(
                f"ix_jobs_{column}",
                ["status", column],
                unique=False,
                postgresql_where=present,
                sqlite_where=present,
            )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE STATISTICS {STATISTICS} (mcv) ON status, resource FROM jobs")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP STATISTICS IF EXISTS {STATISTICS}")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        for column in reversed(SCHEDULE):
            batch_op.drop_index(f"ix_jobs_{column}")
        for name, _ in reversed(NEW):
            batch_op.drop_index(name)
        for name, before, _ in reversed(WIDER):
            batch_op.drop_index(name)
            batch_op.create_index(name, before, unique=False)
