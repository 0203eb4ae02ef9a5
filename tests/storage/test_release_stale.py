"""storage.ledger.release_stale on both databases: rows a dead worker left ``sending`` longer than the
lease go back to ``pending`` (or are skipped in a cancelled campaign); nothing else moves."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from storage.ledger import release_stale
from storage.models import Campaign, Recipient, User

NOW = datetime(2031, 5, 4, 12, 0, 0, tzinfo=timezone.utc)
LEASE = timedelta(seconds=60)
OLD = NOW - LEASE - timedelta(seconds=1)    # held longer than the lease
YOUNG = NOW - LEASE + timedelta(seconds=1)  # still within the lease


def _user(sessions) -> None:
    with sessions.begin() as s:
        if s.get(User, 1) is None:
            s.add(User(id=1, first_name="A"))


def _campaign(sessions, status: str = "sending") -> str:
    _user(sessions)
    campaign_id = str(uuid.uuid4())
    with sessions.begin() as s:
        s.add(Campaign(id=campaign_id, user_id=1, name="c", type="email", status=status,
                       dispatched_at=NOW - timedelta(hours=1), progress_at=NOW - timedelta(hours=1)))
    return campaign_id


def _row(sessions, campaign_id: str, status: str, updated_at: datetime, reason: str | None = None) -> int:
    with sessions.begin() as s:
        row = Recipient(campaign_id=campaign_id, contact_id=str(uuid.uuid4()), status=status, reason=reason,
                        attempts=1, created_at=NOW - timedelta(days=1), updated_at=updated_at)
        s.add(row)
        s.flush()
        return row.id


def _state(sessions, row_id: int) -> tuple[str, str | None, datetime]:
    with sessions() as s:
        row = s.get(Recipient, row_id)
        return row.status, row.reason, row.updated_at


def _release(sessions, now: datetime = NOW, lease: timedelta = LEASE) -> list[str]:
    with sessions.begin() as s:
        return release_stale(s, now, lease)


def test_a_sending_row_held_longer_than_the_lease_goes_back_to_pending(sessions):
    campaign_id = _campaign(sessions)
    row_id = _row(sessions, campaign_id, "sending", OLD)
    assert _release(sessions) == [campaign_id]
    status, reason, updated_at = _state(sessions, row_id)
    assert status == "pending"
    assert reason is None
    assert updated_at == NOW


def test_a_released_row_keeps_the_reason_it_had(sessions):
    # release_stale sets status and updated_at only: a reason left by an earlier transient failure stays.
    campaign_id = _campaign(sessions)
    row_id = _row(sessions, campaign_id, "sending", OLD, reason="421 try later")
    _release(sessions)
    assert _state(sessions, row_id)[:2] == ("pending", "421 try later")


def test_a_sending_row_within_the_lease_is_untouched(sessions):
    campaign_id = _campaign(sessions)
    row_id = _row(sessions, campaign_id, "sending", YOUNG)
    assert _release(sessions) == []
    assert _state(sessions, row_id) == ("sending", None, YOUNG)


def test_a_row_held_exactly_the_lease_is_not_yet_stale(sessions):
    campaign_id = _campaign(sessions)
    row_id = _row(sessions, campaign_id, "sending", NOW - LEASE)
    assert _release(sessions) == []
    assert _state(sessions, row_id)[0] == "sending"


def test_rows_in_any_other_status_are_untouched_whatever_their_age(sessions):
    campaign_id = _campaign(sessions)
    ancient = NOW - timedelta(days=30)
    rows = {
        status: (_row(sessions, campaign_id, status, when, reason), (status, reason, when))
        for status, when, reason in [
            ("sent", ancient, None), ("failed", ancient, "550 no such user"),
            ("skipped", ancient, "no_consent"), ("pending", ancient, "421 try later"),
        ]
    }
    young_pending = _row(sessions, campaign_id, "pending", YOUNG)
    assert _release(sessions) == []
    for row_id, expected in rows.values():
        assert _state(sessions, row_id) == expected
    assert _state(sessions, young_pending) == ("pending", None, YOUNG)


def test_a_stale_row_of_a_cancelled_campaign_is_skipped_as_cancelled(sessions):
    campaign_id = _campaign(sessions, status="cancelled")
    stale = _row(sessions, campaign_id, "sending", OLD)
    young = _row(sessions, campaign_id, "sending", YOUNG)
    assert _release(sessions) == [campaign_id]
    assert _state(sessions, stale) == ("skipped", "cancelled", NOW)
    assert _state(sessions, young) == ("sending", None, YOUNG)  # its worker may still record it


def test_stale_rows_of_a_paused_campaign_go_back_to_pending(sessions):
    campaign_id = _campaign(sessions, status="paused")
    row_id = _row(sessions, campaign_id, "sending", OLD)
    assert _release(sessions) == [campaign_id]
    assert _state(sessions, row_id)[0] == "pending"


def test_each_campaign_with_stale_rows_is_returned_once(sessions):
    many, one, fresh = _campaign(sessions), _campaign(sessions), _campaign(sessions)
    for _ in range(4):
        _row(sessions, many, "sending", OLD)
    _row(sessions, many, "sending", YOUNG)
    _row(sessions, one, "sending", OLD)
    _row(sessions, fresh, "sending", YOUNG)
    _row(sessions, fresh, "pending", OLD)
    returned = _release(sessions)
    assert Counter(returned) == Counter({many: 1, one: 1})
    assert _release(sessions) == []  # nothing is stale any more


def test_two_campaigns_are_handled_independently(sessions):
    live, cancelled = _campaign(sessions), _campaign(sessions, status="cancelled")
    live_stale = [_row(sessions, live, "sending", OLD) for _ in range(2)]
    live_young = _row(sessions, live, "sending", YOUNG)
    cancelled_stale = [_row(sessions, cancelled, "sending", OLD) for _ in range(2)]
    cancelled_young = _row(sessions, cancelled, "sending", YOUNG)

    assert sorted(_release(sessions)) == sorted([live, cancelled])

    assert [_state(sessions, r)[:2] for r in live_stale] == [("pending", None)] * 2
    assert [_state(sessions, r)[:2] for r in cancelled_stale] == [("skipped", "cancelled")] * 2
    assert _state(sessions, live_young)[0] == "sending"
    assert _state(sessions, cancelled_young)[0] == "sending"
    with sessions() as s:
        by_campaign = Counter(s.execute(select(Recipient.campaign_id, Recipient.status)).all())
    assert by_campaign == Counter({(live, "pending"): 2, (live, "sending"): 1,
                                   (cancelled, "skipped"): 2, (cancelled, "sending"): 1})


def test_the_lease_is_measured_from_the_given_now(sessions):
    campaign_id = _campaign(sessions)
    row_id = _row(sessions, campaign_id, "sending", YOUNG)
    assert _release(sessions, now=NOW + timedelta(seconds=5)) == [campaign_id]
    assert _state(sessions, row_id)[0] == "pending"
