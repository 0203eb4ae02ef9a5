"""What ``campaign-dispatch status`` reports: queue depths and campaigns in flight."""

from __future__ import annotations

from typing import Any

import redis
from sqlalchemy import select

from storage.campaigns import progress_of
from storage.models import Campaign
from storage.statuses import IN_FLIGHT
from worker.pipeline.actors import QUEUES
from worker.pipeline.app import App
from worker.runtime.broker import NAMESPACE, is_memory


def queue_depths(broker_url: str) -> list[dict[str, Any]]:
    """Ready, delayed and dead-lettered message counts per queue, read from Redis."""
    if is_memory(broker_url):
        return [{"queue": q, "ready": None, "delayed": None, "dead": None} for q in QUEUES]
    client = redis.Redis.from_url(broker_url)
    try:
        return [{"queue": q,
                 "ready": client.llen(f"{NAMESPACE}:{q}"),
                 "delayed": client.llen(f"{NAMESPACE}:{q}.DQ"),
                 "dead": client.zcard(f"{NAMESPACE}:{q}.XQ")} for q in QUEUES]
    finally:
        client.close()


def status_report(app: App) -> dict[str, Any]:
    """Queues plus every campaign that is sending or paused, with its ledger progress."""
    with app.sessions() as session:
        campaigns = session.scalars(select(Campaign).where(Campaign.status.in_(IN_FLIGHT))
                                    .order_by(Campaign.updated_at)).all()
        flying = [{"id": c.id, "name": c.name, "type": c.type, "status": c.status,
                   "progress": progress_of(session, c)} for c in campaigns]
    return {"queues": queue_depths(app.settings.broker_url), "campaigns": flying}
