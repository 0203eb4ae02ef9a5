"""Progress samples, the rate over the last minute and the ETA, on both databases."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from storage.models import Campaign, Recipient
from storage.progress import details, eta_of, note_progress, rate_of
from storage.timefmt import now
from tests.storage.test_ledger import _campaign_with_rows


def _finish(sessions, campaign_id: str, n: int, status: str = "sent", reason: str | None = None) -> None:
    with sessions.begin() as s:
        ids = s.scalars(select(Recipient.id).where(Recipient.campaign_id == campaign_id,
                                                   Recipient.status == "pending").order_by(Recipient.id).limit(n)).all()
        s.execute(update(Recipient).where(Recipient.id.in_(ids)).values(status=status, reason=reason))


def test_rate_and_eta_come_from_samples_ten_seconds_apart_and_one_scheduler_writes_each(sessions):
    campaign_id = _campaign_with_rows(sessions, 100)
    t0 = now()
    with sessions.begin() as s:
        s.get(Campaign, campaign_id).dispatched_at = t0
    with sessions.begin() as s:
        (first,) = note_progress(s, t0)
    assert first["rate"] is None and first["eta_seconds"] is None and first["pending"] == 100
    with sessions.begin() as s:
        assert note_progress(s, t0 + timedelta(seconds=3)) == []  # not due yet
    _finish(sessions, campaign_id, 30)
    with sessions.begin() as s:
        (second,) = note_progress(s, t0 + timedelta(seconds=10))
    assert second["sent"] == 30 and second["rate"] == 3.0 and second["eta_seconds"] == round(70 / 3.0)
    with sessions.begin() as s:  # a second scheduler at the same moment: nothing left to sample
        assert note_progress(s, t0 + timedelta(seconds=10)) == []


def test_the_rate_is_over_the_last_minute_only():
    # 600 done in the first minute, then 60 in the next: the last minute's rate is 1/s
    samples = [[float(t), float(min(t, 60) * 10 + max(0, t - 60))] for t in range(0, 121, 10)]
    assert rate_of(samples) == 1.0
    assert rate_of(samples[:1]) is None
    assert rate_of(samples[:1], now=10.0, done=50) == 5.0  # the live point counts
    assert eta_of(0, None) == 0 and eta_of(10, 0.0) is None and eta_of(10, 4.0) == 2


def test_details_name_retries_waiting_skip_reasons_and_the_last_failure(sessions):
    campaign_id = _campaign_with_rows(sessions, 10)
    _finish(sessions, campaign_id, 3, "skipped", "no_consent")
    _finish(sessions, campaign_id, 1, "skipped", "invalid_email")
    _finish(sessions, campaign_id, 1, "failed", "550 5.1.1 no such user")
    _finish(sessions, campaign_id, 2, "pending", "451 4.7.1 try again later")  # released for a retry
    with sessions() as s:
        got = details(s, [campaign_id])[campaign_id]
    assert got == {"retries_waiting": 2, "skip_reasons": {"no_consent": 3, "invalid_email": 1},
                   "last_failure": "550 5.1.1 no such user"}
