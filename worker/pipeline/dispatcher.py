"""How the doors (the CLI, the HTTP API) hand work to the workers: one interface, two ways.

Queued: a Dramatiq message on this process's broker, for a worker to take (Redis; or the
in-process broker while this process runs a worker itself, as ``run`` does). Inline: with
``memory://`` and no worker in this process, nothing would ever take a message, so the work is done
in the command itself, or, for a dispatch, the campaign is left due for ``run``'s scheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from storage.ledger import open_batches
from storage.models import Campaign
from worker.pipeline import exports, fanout, side_jobs

if TYPE_CHECKING:
    from worker.pipeline.actors import Actors
    from worker.pipeline.app import App


class Dispatcher(Protocol):
    """What the doors ask of the workers."""

    def dispatch(self, campaign_id: str) -> None:
        """Fan the (due, claimed or pending) campaign out now."""

    def resume(self, campaign_id: str) -> None:
        """Deliver a resumed campaign's open rows now (not a stall later)."""

    def test_email(self, email: str, *, campaign_id: str | None = None, payload: dict | None = None,
                   user_id: int | None = None) -> None:
        """Send a ``[TEST]`` email of a stored campaign or of a create payload."""

    def export(self, campaign_id: str, export_id: str) -> None:
        """Write the recipients' XLSX of a recorded pending export."""


class QueuedDispatcher:
    """Enqueues the actors' messages (docs/messages.md)."""

    def __init__(self, app: App, actors: Actors) -> None:
        self._app, self._actors = app, actors

    def dispatch(self, campaign_id: str) -> None:
        self._actors.enqueue_dispatch(campaign_id)

    def resume(self, campaign_id: str) -> None:
        with self._app.sessions() as session:
            campaign = session.get(Campaign, campaign_id)
            if campaign is None or campaign.dispatched_at is None:  # not fanned out: due as before
                return
            batches = open_batches(session, campaign_id, fanout.batch_size(self._app, campaign.type))
        self._actors.enqueue_batches(batches)

    def test_email(self, email: str, *, campaign_id: str | None = None, payload: dict | None = None,
                   user_id: int | None = None) -> None:
        self._actors.send_test_email.send(email, campaign_id=campaign_id, payload=payload, user_id=user_id)

    def export(self, campaign_id: str, export_id: str) -> None:
        self._actors.export_recipients.send(campaign_id, export_id)


class InlineDispatcher:
    """Does the work in this process (``memory://`` without a worker here)."""

    def __init__(self, app: App) -> None:
        self._app = app

    def dispatch(self, campaign_id: str) -> None:
        # The campaign is pending and due now: `run`'s scheduler claims it on its next tick.
        return None

    def resume(self, campaign_id: str) -> None:
        # Resume set progress_at far back: `run`'s reconcile re-enqueues the open rows on its next tick.
        return None

    def test_email(self, email: str, *, campaign_id: str | None = None, payload: dict | None = None,
                   user_id: int | None = None) -> None:
        side_jobs.send_test_email(self._app, email, campaign_id=campaign_id, payload=payload, user_id=user_id)

    def export(self, campaign_id: str, export_id: str) -> None:
        exports.run_export(self._app, campaign_id, export_id)
