"""campaigns.resumed_at: when the campaign was last resumed

``MAX_SEND_ERRORS`` counts the recipients that failed since the campaign was started or last
resumed: failed rows whose last change is at or after ``resumed_at`` (or ``dispatched_at``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resumed_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Not a batch: on SQLite that copies the table and drops the old one, which, with foreign keys
    # on, would cascade to the rows that refer to it (SQLite 3.35+ drops a column in place).
    op.drop_column('campaigns', 'resumed_at')
