"""campaigns.finalised_at: when finalise closed the campaign

Set when a campaign is completed or failed, and when a cancelled campaign is settled: once no
recipient is open, its counters are taken from the ledger, its delivered recipients' tasks dealt and
its letters zipped. A cancelled campaign without it still has that to do.

Campaigns already closed when this runs (completed, failed, cancelled) are marked finalised at their
last update: settling campaigns cancelled long ago would deal tasks and build ZIPs nobody expects.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('finalised_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE campaigns SET finalised_at = updated_at WHERE status IN ('completed', 'failed', 'cancelled')")


def downgrade() -> None:
    # Not a batch: on SQLite that copies the table and drops the old one, which, with foreign keys
    # on, would cascade to the rows that refer to it (SQLite 3.35+ drops a column in place).
    op.drop_column('campaigns', 'finalised_at')
