"""The Dramatiq actors: queues, names and arguments are part of the API (docs/messages.md).

Messages carry ids only. Every actor is safe to run twice: the ledger decides what still needs doing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from storage.errors import Conflict, NotFound, ValidationFailed
from worker.pipeline.app import App

# Dramatiq, the ledger and the actors' modules are imported where the actors are declared and
# used: `status` imports this module for QUEUES only.
if TYPE_CHECKING:
    import dramatiq

    from scheduler.jobs import Enqueue
    from storage.ledger import Batch

log = structlog.get_logger()

CAMPAIGNS_QUEUE = "campaigns"
DELIVERY_QUEUE = "delivery"
DEFAULT_QUEUE = "default"
QUEUES = (CAMPAIGNS_QUEUE, DELIVERY_QUEUE, DEFAULT_QUEUE)


@dataclass
class Actors:
    """The declared actors of one broker, and the enqueue helpers the scheduler is handed."""

    broker: dramatiq.Broker
    dispatch_campaign: dramatiq.Actor
    deliver_batch: dramatiq.Actor
    send_test_email: dramatiq.Actor
    build_preview: dramatiq.Actor
    archive_letters: dramatiq.Actor
    export_recipients: dramatiq.Actor

    def enqueue_archive(self, campaign_id: str) -> None:
        self.archive_letters.send(campaign_id)

    def enqueue_dispatch(self, campaign_id: str) -> None:
        self.dispatch_campaign.send(campaign_id)

    def enqueue_batches(self, batches: list[Batch], delay_ms: int | None = None) -> None:
        """One ``deliver_batch`` message per batch, in order; on Redis a few round trips for them all."""
        from worker.runtime.pipelined_enqueue import send_many

        send_many(self.deliver_batch, [(b.campaign_id, b.first_id, b.last_id) for b in batches], delay=delay_ms)

    def enqueue(self) -> Enqueue:
        """The scheduler's (and finalise's) view of the actors."""
        from scheduler.jobs import Enqueue

        return Enqueue(dispatch=self.enqueue_dispatch, batches=self.enqueue_batches, archive=self.enqueue_archive)


REFUSED = (NotFound, ValidationFailed, Conflict)  # what retrying cannot fix: the message ends at once


def _saying_why(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The actor ``fn``, logging why a message it refuses is refused (Dramatiq logs only the type)."""
    @functools.wraps(fn)
    def actor(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except REFUSED as exc:
            reasons = getattr(exc, "errors", None)
            log.warning("actor.refused", error=str(exc), **({"errors": reasons} if reasons else {}))
            raise
    return actor


def declare_actors(broker: dramatiq.Broker, app: App) -> Actors:
    """Declare every actor on ``broker``, bound to ``app``'s database, SMTP pool and object store."""
    import dramatiq

    from storage.ledger import Batch
    from worker.pipeline import archive, delivery, exports, fanout, finishing, side_jobs

    def dispatch_campaign(campaign_id: str) -> None:
        fanout.dispatch(app, campaign_id, actors.enqueue_batches)
        finishing.finish_now(app, campaign_id, actors.enqueue())  # every recipient skipped: nothing to deliver

    def deliver_batch(campaign_id: str, first_id: int, last_id: int) -> None:
        if delivery.deliver_batch(app, Batch(campaign_id, int(first_id), int(last_id)),
                                  lambda batch, delay: actors.enqueue_batches([batch], delay)):
            finishing.finish_now(app, campaign_id, actors.enqueue())

    def send_test_email(email: str, campaign_id: str | None = None, payload: dict | None = None,
                        user_id: int | None = None) -> None:
        side_jobs.send_test_email(app, email, campaign_id=campaign_id, payload=payload, user_id=user_id)

    def build_preview(campaign_id: str) -> dict:
        return side_jobs.build_preview(app, campaign_id)

    def archive_letters(campaign_id: str) -> None:
        archive.build_archive(app, campaign_id)
        finishing.finish_now(app, campaign_id, actors.enqueue())

    def export_recipients(campaign_id: str, export_id: str) -> None:
        exports.run_export(app, campaign_id, export_id)

    # Dramatiq's own retries cover crashes (database down, a bug): the ledger makes them safe. What
    # retrying cannot fix (an unknown campaign, invalid input, a state that forbids the action) ends
    # the message at once: `throws`. Faults of a whole campaign while it sends are brakes, not errors.
    options = {"max_retries": 10, "min_backoff": 1000, "max_backoff": 300_000, "throws": REFUSED}
    actors = Actors(
        broker=broker,
        dispatch_campaign=dramatiq.actor(_saying_why(dispatch_campaign), broker=broker, queue_name=CAMPAIGNS_QUEUE,
                                         actor_name="dispatch_campaign", **options),
        deliver_batch=dramatiq.actor(_saying_why(deliver_batch), broker=broker, queue_name=DELIVERY_QUEUE,
                                     actor_name="deliver_batch", time_limit=30 * 60 * 1000, **options),
        send_test_email=dramatiq.actor(_saying_why(send_test_email), broker=broker, queue_name=DEFAULT_QUEUE,
                                       actor_name="send_test_email", **options),
        build_preview=dramatiq.actor(_saying_why(build_preview), broker=broker, queue_name=DEFAULT_QUEUE,
                                     actor_name="build_preview", **options),
        archive_letters=dramatiq.actor(_saying_why(archive_letters), broker=broker, queue_name=DEFAULT_QUEUE,
                                       actor_name="archive_letters", time_limit=60 * 60 * 1000, **options),
        export_recipients=dramatiq.actor(_saying_why(export_recipients), broker=broker, queue_name=DEFAULT_QUEUE,
                                         actor_name="export_recipients", time_limit=60 * 60 * 1000, **options),
    )
    return actors
