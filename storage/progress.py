"""How fast a campaign in flight goes: progress samples, the rate over the last minute, the ETA, and
what an operator asks next (retries waiting, why recipients were skipped, the last failure).

Every ``SAMPLE_EVERY`` seconds the scheduler appends ``[unix seconds, recipients done]`` to the
campaign's ``progress_samples`` (a conditional update, so of several schedulers one writes it and
logs the line); the rate is read from those samples, never by scanning the ledger by time.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from storage.campaigns import progress_of_many
from storage.models import Campaign, Recipient
from storage.statuses import CampaignStatus, RecipientStatus

SAMPLE_EVERY = 10.0  # seconds between samples (and campaign.progress log lines)
KEEP = 8  # samples kept: a little more than the minute the rate is taken over
WINDOW = 60.0  # the rate is over the last minute


def samples_of(campaign: Campaign) -> list[list[float]]:
    """The campaign's samples, oldest first (``[]`` before the first, or if unreadable)."""
    try:
        samples = json.loads(campaign.progress_samples or "[]")
    except ValueError:
        return []
    return [s for s in samples if isinstance(s, list) and len(s) == 2]


def done_of(progress: dict[str, int]) -> int:
    """Recipients that reached a final state."""
    return progress["sent"] + progress["failed"] + progress["skipped"]


def rate_of(samples: list[list[float]], now: float | None = None, done: int | None = None) -> float | None:
    """Recipients per second over the last minute (from the sample closest to a minute before the
    newest point, which is ``(now, done)`` when given), or None with fewer than two points."""
    points = list(samples) + ([[now, done]] if now is not None and done is not None else [])
    if len(points) < 2:
        return None
    t1, d1 = points[-1]
    older = [p for p in points[:-1] if t1 - p[0] <= WINDOW + SAMPLE_EVERY / 2] or points[-2:-1]
    t0, d0 = older[0]
    if t1 - t0 <= 0:
        return None
    return max(0.0, (d1 - d0) / (t1 - t0))


def eta_of(pending: int, rate: float | None) -> int | None:
    """Seconds until the pending recipients are done at ``rate`` (None when nothing moves)."""
    if pending == 0:
        return 0
    if not rate:
        return None
    return round(pending / rate)


def note_progress(session: Session, now: datetime) -> list[dict[str, Any]]:
    """Sample every sending campaign whose last sample is ``SAMPLE_EVERY`` old; return the progress
    of each campaign this call sampled (what the ``campaign.progress`` log line says)."""
    clock = now.timestamp()
    due = {}  # campaign -> its samples, read once
    for campaign in session.scalars(select(Campaign).where(Campaign.status == CampaignStatus.SENDING,
                                                           Campaign.dispatched_at.is_not(None))):
        samples = samples_of(campaign)
        if not samples or clock - samples[-1][0] >= SAMPLE_EVERY - 0.5:
            due[campaign] = samples
    progress = progress_of_many(session, [c.id for c in due])
    noted = []
    for campaign, samples in due.items():
        p = progress[campaign.id]
        kept = (samples + [[round(clock, 3), done_of(p)]])[-KEEP:]
        # Conditional: of several schedulers sampling at once, one writes (and logs).
        moved = session.execute(
            update(Campaign).where(Campaign.id == campaign.id, Campaign.progress_samples.is_(None)
                                   if campaign.progress_samples is None
                                   else Campaign.progress_samples == campaign.progress_samples)
            .values(progress_samples=json.dumps(kept)).execution_options(synchronize_session=False)).rowcount
        if moved:
            rate = rate_of(kept)
            noted.append({"campaign_id": campaign.id, **{k: p[k] for k in ("sent", "failed", "skipped", "pending")},
                          "rate": round(rate, 1) if rate is not None else None, "eta_seconds": eta_of(p["pending"], rate)})
    return noted


def details(session: Session, campaign_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per campaign: ``retries_waiting`` (recipients whose send failed for now and waits to be tried
    again), ``skip_reasons`` (``{reason: count}``) and ``last_failure`` (the newest failed
    recipient's reason, or None)."""
    out: dict[str, dict[str, Any]] = {cid: {"retries_waiting": 0, "skip_reasons": {}, "last_failure": None}
                                      for cid in campaign_ids}
    if not campaign_ids:
        return out
    for cid, n in session.execute(
            select(Recipient.campaign_id, func.count()).where(
                Recipient.campaign_id.in_(campaign_ids), Recipient.status == RecipientStatus.PENDING,
                Recipient.reason.is_not(None)).group_by(Recipient.campaign_id)):
        out[cid]["retries_waiting"] = n
    for cid, reason, n in session.execute(
            select(Recipient.campaign_id, Recipient.reason, func.count()).where(
                Recipient.campaign_id.in_(campaign_ids), Recipient.status == RecipientStatus.SKIPPED)
            .group_by(Recipient.campaign_id, Recipient.reason)):
        out[cid]["skip_reasons"][reason or "unknown"] = n
    for cid in campaign_ids:
        out[cid]["last_failure"] = session.scalar(
            select(Recipient.reason).where(Recipient.campaign_id == cid, Recipient.status == RecipientStatus.FAILED)
            .order_by(Recipient.updated_at.desc(), Recipient.id.desc()).limit(1))
    return out
