"""how flows that ended before 0015 ended

0015 keeps how a flow ended as it ends; the flows that had ended already got nothing,
so deleting one of their stages still changed how they read (a failed flow whose
failed stage went read as cancelled or completed). They get it now, worked out from
their stages as the flow's view did when they ended.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        UPDATE flows SET ended_as = CASE
            WHEN EXISTS (SELECT 1 FROM jobs WHERE jobs.flow_id = flows.id
                         AND jobs.status IN ('failed', 'expired')) THEN 'failed'
            WHEN EXISTS (SELECT 1 FROM jobs WHERE jobs.flow_id = flows.id
                         AND jobs.status = 'cancelled') THEN 'cancelled'
            ELSE 'completed'
        END
        WHERE finished_at IS NOT NULL AND ended_as IS NULL
        """
    )


def downgrade() -> None:
    """Nothing: 0015's downgrade drops the column."""
