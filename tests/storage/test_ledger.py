"""The ledger's set-based pieces on both databases: batching and conditional claims."""

from __future__ import annotations

import uuid

from storage.ledger import Batch, claim, finish, open_batches
from storage.models import Campaign, Recipient, User
from storage.timefmt import now


def _campaign_with_rows(sessions, rows: int) -> str:
    campaign_id = str(uuid.uuid4())
    with sessions.begin() as s:
        s.add(User(id=1, first_name="A"))
        s.flush()
        s.add(Campaign(id=campaign_id, user_id=1, name="c", type="email", status="sending"))
        s.flush()
        s.add_all(Recipient(campaign_id=campaign_id, contact_id=str(uuid.UUID(int=i)), status="pending")
                  for i in range(rows))
    return campaign_id


def test_open_batches_cover_every_pending_row_in_ranges_of_the_batch_size(sessions):
    campaign_id = _campaign_with_rows(sessions, 25)
    with sessions() as s:
        batches = open_batches(s, campaign_id, 10)
        ids = sorted(r.id for r in s.query(Recipient).filter_by(campaign_id=campaign_id))
    assert [(b.first_id, b.last_id) for b in batches] == [(ids[0], ids[9]), (ids[10], ids[19]), (ids[20], ids[24])]


def test_a_claimed_row_is_claimed_once_and_finished_once(sessions):
    campaign_id = _campaign_with_rows(sessions, 3)
    with sessions() as s:
        (batch,) = open_batches(s, campaign_id, 10)
    with sessions.begin() as s:
        first = claim(s, batch, now())
    with sessions.begin() as s:
        second = claim(s, Batch(campaign_id, batch.first_id, batch.last_id), now())
    assert len(first) == 3 and second == []
    with sessions.begin() as s:
        assert finish(s, "sent", [(c.id, None) for c in first], now()) == 3
    with sessions.begin() as s:
        assert finish(s, "sent", [(c.id, None) for c in first], now()) == 0  # a duplicate changes nothing


def test_deleting_a_campaign_deletes_its_ledger_rows_though_no_key_ties_them(sessions):
    from sqlalchemy import func, select

    from storage.campaigns import delete_campaign

    deleted, kept = _campaign_with_rows(sessions, 3), str(uuid.uuid4())
    with sessions.begin() as s:
        s.add(Campaign(id=kept, user_id=1, name="k", type="email", status="draft"))
        s.add(Recipient(campaign_id=kept, contact_id="other", status="pending"))
        s.get(Campaign, deleted).status = "draft"  # editable again: only such a campaign can be deleted
    with sessions.begin() as s:
        delete_campaign(s, s.get(Campaign, deleted))
    with sessions() as s:
        left = dict(s.execute(select(Recipient.campaign_id, func.count()).group_by(Recipient.campaign_id)).all())
    assert left == {kept: 1}


def test_batches_of_consecutive_pending_ids_are_the_ones_open_batches_finds(sessions):
    from storage.ledger import Inserted

    campaign_id = _campaign_with_rows(sessions, 25)
    with sessions() as s:
        ids = sorted(s.scalars(select_ids(campaign_id)))
        found = open_batches(s, campaign_id, 10)
    assert Inserted(25, 0, ids[0], ids[-1]).batches(campaign_id, 10) == found
    assert Inserted(25, 0, ids[0], ids[-1]).batches(campaign_id, 25) == [Batch(campaign_id, ids[0], ids[-1])]
    # a skipped row among the pending ones: not consecutive, open_batches must count them
    assert Inserted(25, 1, ids[0], ids[-1]).batches(campaign_id, 10) is None
    assert Inserted(3, 3, None, None).batches(campaign_id, 10) == []  # every row skipped


def select_ids(campaign_id: str):
    from sqlalchemy import select

    return select(Recipient.id).where(Recipient.campaign_id == campaign_id)
