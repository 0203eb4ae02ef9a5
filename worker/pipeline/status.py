"""What ``campaign-dispatch status`` reports: queue depths, workers alive and campaigns in flight."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from storage.campaigns import progress_of_many
from storage.models import Campaign
from storage.progress import details, done_of, eta_of, rate_of, samples_of
from storage.statuses import IN_FLIGHT, CampaignStatus
from storage.timefmt import now as utcnow
from worker.pipeline.app import App
from worker.pipeline.presence import workers_alive
from worker.runtime.broker import NAMESPACE, is_memory


def queue_depths(broker_url: str) -> list[dict[str, Any]]:
    """Ready, delayed and dead-lettered message counts per queue, read from Redis."""
    # Imported here: `campaigns show` imports this module, and needs neither Redis nor the actors.
    from worker.pipeline.actors import QUEUES

    if is_memory(broker_url):
        return [{"queue": q, "ready": None, "delayed": None, "dead": None} for q in QUEUES]
    import redis

    client = redis.Redis.from_url(broker_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        return [{"queue": q,
                 "ready": client.llen(f"{NAMESPACE}:{q}"),
                 "delayed": client.llen(f"{NAMESPACE}:{q}.DQ"),
                 "dead": client.zcard(f"{NAMESPACE}:{q}.XQ")} for q in QUEUES]
    finally:
        client.close()


def status_report(app: App) -> dict[str, Any]:
    """Queues, workers alive, and every campaign that is sending or paused: its ledger progress,
    rate over the last minute, elapsed time, ETA, retries waiting, last error and skip reasons."""
    now = utcnow()
    with app.sessions() as session:
        campaigns = session.scalars(select(Campaign).where(Campaign.status.in_(IN_FLIGHT))
                                    .order_by(Campaign.updated_at)).all()
        ids = [c.id for c in campaigns]
        counts = progress_of_many(session, ids)
        more = details(session, ids)
        flying = []
        for c in campaigns:
            p = counts[c.id]
            rate = rate_of(samples_of(c), now.timestamp(), done_of(p)) if c.status == CampaignStatus.SENDING else None
            started = c.dispatched_at
            flying.append({
                "id": c.id, "name": c.name, "type": c.type, "status": c.status, "progress": p,
                "rate": round(rate, 1) if rate is not None else None,
                "elapsed_seconds": round((now - started).total_seconds()) if started else None,
                "eta_seconds": eta_of(p["pending"], rate) if c.status == CampaignStatus.SENDING else None,
                "retries_waiting": more[c.id]["retries_waiting"],
                "last_error": c.error or more[c.id]["last_failure"],
                "skip_reasons": more[c.id]["skip_reasons"],
            })
    return {"queues": queue_depths(app.settings.broker_url), "workers": workers_alive(app.settings.broker_url),
            "campaigns": flying}
