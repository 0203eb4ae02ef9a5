"""How the doors (the CLI, the HTTP API) hand work to the workers: one interface, two ways.

Queued: a Dramatiq message on this process's broker, for a worker to take (Redis; or the
in-process broker while this process runs a worker itself, as ``run`` does). Inline: with
``memory://`` and no worker in this process, nothing would ever take a message, so the work is done
in the command itself, or, for a dispatch, the campaign is left due for ``run``'s scheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from worker.pipeline import exports, side_jobs

if TYPE_CHECKING:
    from worker.pipeline.actors import Actors
    from worker.pipeline.app import App


class Dispatcher(Protocol):
    """What the doors ask of the workers."""

    def dispatch(self, campaign_id: str) -> None:
        """Fan the (due, claimed or pending) campaign out now."""

    def test_email(self, email: str, *, campaign_id: str | None = None, payload: dict | None = None,
                   user_id: int | None = None) -> None:
        """Send a ``[TEST]`` email of a stored campaign or of a create payload."""

    def export(self, campaign_id: str, export_id: str) -> None:
        """Write the recipients' XLSX of a recorded pending export."""


class QueuedDispatcher:
    """Enqueues the actors' messages (README, "Messages for the API")."""

    def __init__(self, actors: Actors) -> None:
        self._actors = actors

    def dispatch(self, campaign_id: str) -> None:
        self._actors.enqueue_dispatch(campaign_id)

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

    def test_email(self, email: str, *, campaign_id: str | None = None, payload: dict | None = None,
                   user_id: int | None = None) -> None:
        side_jobs.send_test_email(self._app, email, campaign_id=campaign_id, payload=payload, user_id=user_id)

    def export(self, campaign_id: str, export_id: str) -> None:
        exports.run_export(self._app, campaign_id, export_id)
