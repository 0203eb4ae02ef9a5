"""The archive moves into the ledger, compressed: recipients.content, campaigns.archive_dictionary

What was sent to each recipient was a row of its own in ``campaign_messages`` (its text, the
campaign and contact ids again, a unique index over both): ~2,180 bytes a recipient for the email
benchmark's newsletter, two thirds of what a campaign left in the database. It is now a column of
the recipient's ledger row, written with its final status, compressed with a dictionary made from
the campaign's sources (``storage.archive``). A message's id is its ledger row's id.

Existing messages move into their ledger rows, compressed without a dictionary (the campaign's
sources may have changed since they were sent); the downgrade moves them back, as text.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

from storage.archive import Packer, unpack

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

BATCH = 1000

_recipients = sa.table('recipients', sa.column('id', sa.BigInteger), sa.column('campaign_id', sa.String),
                       sa.column('contact_id', sa.String), sa.column('content', sa.LargeBinary),
                       sa.column('updated_at', sa.DateTime(timezone=True)))
_campaigns = sa.table('campaigns', sa.column('id', sa.String), sa.column('archive_dictionary', sa.LargeBinary))


_messages = sa.table('campaign_messages', sa.column('id', sa.BigInteger), sa.column('campaign_id', sa.String),
                     sa.column('contact_id', sa.String), sa.column('content', sa.Text),
                     sa.column('created_at', sa.DateTime(timezone=True)),
                     sa.column('updated_at', sa.DateTime(timezone=True)))


def upgrade() -> None:
    with op.batch_alter_table('recipients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('content', sa.LargeBinary(), nullable=True))
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('archive_dictionary', sa.LargeBinary(), nullable=True))

    conn = op.get_bind()
    messages = _messages
    orphans = conn.execute(sa.select(sa.func.count()).select_from(messages).where(~sa.exists().where(
        _recipients.c.campaign_id == messages.c.campaign_id,
        _recipients.c.contact_id == messages.c.contact_id))).scalar()
    if orphans:
        # Every archived message was written with its recipient's final status: none should lack one.
        raise RuntimeError(f"{orphans} archived messages have no ledger row to move into; nothing was changed")
    packer, last = Packer(None), 0
    while True:
        rows = conn.execute(sa.select(messages.c.id, messages.c.campaign_id, messages.c.contact_id,
                                      messages.c.content).where(messages.c.id > last)
                            .order_by(messages.c.id).limit(BATCH)).all()
        if not rows:
            break
        conn.execute(_recipients.update()
                     .where(_recipients.c.campaign_id == sa.bindparam('c'),
                            _recipients.c.contact_id == sa.bindparam('k'))
                     .values(content=sa.bindparam('packed')),
                     [{'c': r.campaign_id, 'k': r.contact_id, 'packed': packer.pack(r.content)} for r in rows])
        last = rows[-1].id
    op.drop_table('campaign_messages')


def downgrade() -> None:
    op.create_table('campaign_messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('campaign_id', sa.String(length=36), nullable=False),
    sa.Column('contact_id', sa.String(length=36), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('campaign_id', 'contact_id', name='uq_messages_campaign_contact')
    )
    conn = op.get_bind()
    messages = _messages
    dictionaries: dict[str, bytes | None] = {}
    last = 0
    while True:
        rows = conn.execute(sa.select(_recipients.c.id, _recipients.c.campaign_id, _recipients.c.contact_id,
                                      _recipients.c.content, _recipients.c.updated_at)
                            .where(_recipients.c.id > last, _recipients.c.content.is_not(None))
                            .order_by(_recipients.c.id).limit(BATCH)).all()
        if not rows:
            break
        for campaign_id in {r.campaign_id for r in rows} - dictionaries.keys():
            dictionaries[campaign_id] = conn.execute(sa.select(_campaigns.c.archive_dictionary)
                                                     .where(_campaigns.c.id == campaign_id)).scalar()
        conn.execute(messages.insert(), [
            {'campaign_id': r.campaign_id, 'contact_id': r.contact_id,
             'content': unpack(r.content, dictionaries[r.campaign_id]),
             'created_at': r.updated_at, 'updated_at': r.updated_at} for r in rows])
        last = rows[-1].id
    # ALTER TABLE ... DROP COLUMN, not a batch: on SQLite a batch copies the table and drops the
    # old one, and dropping `campaigns` with foreign keys on would cascade to every row just moved.
    op.drop_column('campaigns', 'archive_dictionary')
    op.drop_column('recipients', 'content')
