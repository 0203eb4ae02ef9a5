"""recipients.artifact_key: where a recipient's letter PDF is stored

Letters are stored one object per delivery batch (a ZIP of that batch's PDFs), not one object per
recipient; each ``sent`` row of a letter campaign names the object that holds its PDF.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('recipients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('artifact_key', sa.String(length=255), nullable=True))


def downgrade() -> None:
    # Not a batch: on SQLite that copies the table and drops the old one, which, with foreign keys
    # on, would cascade to the rows that refer to it (SQLite 3.35+ drops a column in place).
    op.drop_column('recipients', 'artifact_key')
