"""scheduler.jobs.reconcile on both databases, with an Enqueue that records what it is handed (no broker):
lost dispatches are sent again once, stalled campaigns get their pending rows re-enqueued as id ranges,
rows held by dead workers are released first, and paused campaigns are left alone."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from scheduler.jobs import Enqueue, reconcile
from storage.ledger import Batch
from storage.models import Campaign, Recipient, User

NOW = datetime(2031, 5, 4, 12, 0, 0, tzinfo=timezone.utc)
LEASE = timedelta(seconds=60)
STALL = timedelta(seconds=30)
LONG_AGO = NOW - timedelta(hours=1)
RECENT = NOW - timedelta(seconds=5)


@dataclass
class Recorder:
    dispatched: list[str] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)

    def enqueue(self) -> Enqueue:
        return Enqueue(dispatch=self.dispatched.append, batches=self.batches.extend, archive=self.archived.append)


def _run(sessions, recorder: Recorder, now: datetime = NOW, batch_size: int = 10) -> dict[str, int]:
    return reconcile(sessions, recorder.enqueue(), now, lease=LEASE, stall=STALL, batch_size=batch_size)


def _campaign(sessions, *, status: str = "sending", dispatched_at: datetime | None = LONG_AGO,
              progress_at: datetime | None = LONG_AGO, updated_at: datetime = LONG_AGO) -> str:
    campaign_id = str(uuid.uuid4())
    with sessions.begin() as s:
        if s.get(User, 1) is None:
            s.add(User(id=1, first_name="A"))
            s.flush()
        s.add(Campaign(id=campaign_id, user_id=1, name="c", type="email", status=status,
                       dispatched_at=dispatched_at, progress_at=progress_at, updated_at=updated_at))
    return campaign_id


def _rows(sessions, campaign_id: str, statuses: list[str], updated_at: datetime = LONG_AGO) -> list[int]:
    """One ledger row per status, in id order; their ids."""
    with sessions.begin() as s:
        rows = [Recipient(campaign_id=campaign_id, contact_id=str(uuid.uuid4()), status=status, attempts=1,
                          created_at=LONG_AGO, updated_at=updated_at) for status in statuses]
        for row in rows:  # one by one, so ids follow the list's order on both databases
            s.add(row)
            s.flush()
        return [row.id for row in rows]


def _campaign_row(sessions, campaign_id: str) -> Campaign:
    with sessions() as s:
        return s.get(Campaign, campaign_id)


def _statuses(sessions, ids: list[int]) -> list[str]:
    with sessions() as s:
        found = dict(s.execute(select(Recipient.id, Recipient.status).where(Recipient.id.in_(ids))).all())
    return [found[i] for i in ids]


# -- lost dispatches --------------------------------------------------------------------------------

def test_a_claimed_campaign_never_fanned_out_is_dispatched_again_once(sessions):
    campaign_id = _campaign(sessions, dispatched_at=None, progress_at=None, updated_at=NOW - STALL - timedelta(seconds=1))
    recorder = Recorder()

    counts = _run(sessions, recorder)
    assert recorder.dispatched == [campaign_id]
    assert counts == {"redispatched": 1, "requeued_batches": 0, "released_campaigns": 0}
    assert _campaign_row(sessions, campaign_id).updated_at == NOW  # reconcile noted when it re-dispatched

    again = _run(sessions, recorder)
    assert recorder.dispatched == [campaign_id]  # not a second time
    assert again["redispatched"] == 0
    assert recorder.batches == [] and recorder.archived == []


def test_it_is_dispatched_again_once_another_stall_has_passed(sessions):
    campaign_id = _campaign(sessions, dispatched_at=None, progress_at=None, updated_at=LONG_AGO)
    recorder = Recorder()
    _run(sessions, recorder)
    _run(sessions, recorder, now=NOW + STALL + timedelta(seconds=1))
    assert recorder.dispatched == [campaign_id, campaign_id]


def test_a_campaign_claimed_recently_is_not_dispatched_again(sessions):
    campaign_id = _campaign(sessions, dispatched_at=None, progress_at=None, updated_at=RECENT)
    recorder = Recorder()
    counts = _run(sessions, recorder)
    assert recorder.dispatched == []
    assert counts["redispatched"] == 0
    assert _campaign_row(sessions, campaign_id).updated_at == RECENT


def test_campaigns_not_sending_are_never_dispatched_again(sessions):
    for status in ("pending", "paused", "cancelled", "draft"):
        _campaign(sessions, status=status, dispatched_at=None, progress_at=None, updated_at=LONG_AGO)
    recorder = Recorder()
    assert _run(sessions, recorder)["redispatched"] == 0
    assert recorder.dispatched == []


# -- stalled campaigns ------------------------------------------------------------------------------

def test_a_stalled_campaign_gets_exactly_its_pending_rows_again_in_batches(sessions):
    campaign_id = _campaign(sessions, progress_at=NOW - STALL - timedelta(seconds=1))
    # Interleaved with rows already decided, which no batch may name as its first or last id.
    statuses = ["sent"] + ["pending"] * 12 + ["failed", "skipped"] + ["pending"] * 13 + ["sent"]
    ids = _rows(sessions, campaign_id, statuses)
    pending = [i for i, status in zip(ids, statuses) if status == "pending"]
    other = _campaign(sessions, progress_at=RECENT)  # another campaign's rows between: not in any batch
    _rows(sessions, other, ["pending"] * 3)
    recorder = Recorder()

    counts = _run(sessions, recorder, batch_size=10)

    assert recorder.batches == [Batch(campaign_id, pending[0], pending[9]),
                                Batch(campaign_id, pending[10], pending[19]),
                                Batch(campaign_id, pending[20], pending[24])]
    covered = [i for b in recorder.batches for i in pending if b.first_id <= i <= b.last_id]
    assert covered == pending
    assert counts == {"redispatched": 0, "requeued_batches": 3, "released_campaigns": 0}
    assert recorder.dispatched == []
    assert _campaign_row(sessions, campaign_id).progress_at == NOW


def test_a_stalled_campaign_is_requeued_once_per_stall(sessions):
    campaign_id = _campaign(sessions)
    _rows(sessions, campaign_id, ["pending"] * 3)
    recorder = Recorder()
    _run(sessions, recorder)
    second = _run(sessions, recorder)  # progress_at was set to now: not stalled any more
    assert second["requeued_batches"] == 0
    assert len(recorder.batches) == 1


def test_a_campaign_that_progressed_recently_is_not_requeued(sessions):
    campaign_id = _campaign(sessions, progress_at=RECENT)
    _rows(sessions, campaign_id, ["pending"] * 5)
    recorder = Recorder()
    counts = _run(sessions, recorder)
    assert recorder.batches == []
    assert counts["requeued_batches"] == 0
    assert _campaign_row(sessions, campaign_id).progress_at == RECENT


def test_a_stalled_campaign_without_pending_rows_is_not_requeued(sessions):
    campaign_id = _campaign(sessions)
    _rows(sessions, campaign_id, ["sent", "failed", "skipped"])
    _rows(sessions, campaign_id, ["sending"], updated_at=RECENT)  # held, within its lease
    recorder = Recorder()
    assert _run(sessions, recorder)["requeued_batches"] == 0
    assert recorder.batches == []


def test_a_paused_campaign_with_pending_rows_is_never_requeued(sessions):
    campaign_id = _campaign(sessions, status="paused", progress_at=LONG_AGO)
    ids = _rows(sessions, campaign_id, ["pending"] * 4)
    stale = _rows(sessions, campaign_id, ["sending"], updated_at=LONG_AGO)
    recorder = Recorder()
    counts = _run(sessions, recorder)
    counts_later = _run(sessions, recorder, now=NOW + timedelta(days=1))
    assert recorder.batches == [] and recorder.dispatched == []
    assert counts["requeued_batches"] == counts_later["requeued_batches"] == 0
    assert _statuses(sessions, ids + stale) == ["pending"] * 5  # its stale row is released, not sent
    assert counts["released_campaigns"] == 1


# -- rows held by dead workers ----------------------------------------------------------------------

def test_stale_sending_rows_are_released_and_enqueued_in_the_same_call(sessions):
    campaign_id = _campaign(sessions)
    ids = _rows(sessions, campaign_id, ["sent", "sending", "sending", "sending", "sent"], updated_at=NOW - LEASE * 2)
    held = _rows(sessions, campaign_id, ["sending"], updated_at=RECENT)  # its worker is alive
    recorder = Recorder()

    counts = _run(sessions, recorder, batch_size=2)

    assert _statuses(sessions, ids + held) == ["sent", "pending", "pending", "pending", "sent", "sending"]
    assert recorder.batches == [Batch(campaign_id, ids[1], ids[2]), Batch(campaign_id, ids[3], ids[3])]
    assert counts == {"redispatched": 0, "requeued_batches": 2, "released_campaigns": 1}


def test_the_counts_add_up_over_several_campaigns(sessions):
    lost = _campaign(sessions, dispatched_at=None, progress_at=None, updated_at=LONG_AGO)
    stalled = _campaign(sessions)
    _rows(sessions, stalled, ["pending"] * 7)
    released = _campaign(sessions, progress_at=RECENT)  # it progressed recently, but a worker died
    released_ids = _rows(sessions, released, ["sending"] * 2, updated_at=LONG_AGO)
    recorder = Recorder()

    counts = _run(sessions, recorder, batch_size=3)

    # the dead worker's rows go on at once, not a stall later
    assert counts == {"redispatched": 1, "requeued_batches": 4, "released_campaigns": 1}
    assert recorder.dispatched == [lost]
    assert {b.campaign_id for b in recorder.batches} == {stalled, released}
    assert _statuses(sessions, released_ids) == ["pending", "pending"]
