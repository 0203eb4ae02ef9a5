"""campaigns.progress_samples: the last minute of progress, for rate and ETA

A JSON list of ``[unix seconds, recipients done]`` pairs, one every 10 s while the campaign is in
flight, the newest last, kept to the last eight: ``status`` and the ``campaign.progress`` log line
compute the rate over the last minute from them without scanning the ledger by time.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('progress_samples', sa.Text(), nullable=True))


def downgrade() -> None:
    # Not a batch: on SQLite that copies the table and drops the old one, which, with foreign keys
    # on, would cascade to the rows that refer to it (SQLite 3.35+ drops a column in place).
    op.drop_column('campaigns', 'progress_samples')
