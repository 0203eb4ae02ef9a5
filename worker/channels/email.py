"""The email channel: render each recipient's message and send it over the SMTP pool."""

from __future__ import annotations

import time

import structlog

from renderers.errors import RenderError
from storage.ledger import Claimed
from worker.channels.campaign_runtime import CampaignRuntime
from worker.channels.outcomes import Outcomes, Ready
from worker.channels.smtp import OutgoingMail, PermanentSmtpError, SendResult, SmtpSender

log = structlog.get_logger()


def send_emails(smtp: SmtpSender, runtime: CampaignRuntime, ready: list[Ready], outcomes: Outcomes, *,
                send_seconds: float) -> None:
    """Render and send over the SMTP pool, in rounds of twice its size, starting no new round after
    ``send_seconds`` (half the lease), so a slow server can never make reconcile think this worker
    died and hand its rows to another."""
    outgoing: list[tuple[Claimed, str, OutgoingMail]] = []
    for item in ready:
        try:
            email = runtime.email(item.contact, item.user)
        except RenderError as exc:
            outcomes.failed.append((item.row.id, str(exc)))
            log.warning("deliver.render_failed", contact_id=item.row.contact_id, error=str(exc))
            continue
        outgoing.append((item.row, email.html, OutgoingMail(email.envelope_from, [email.rcpt], email.data)))
    deadline = time.monotonic() + send_seconds
    chunk = smtp.pool_size * 2
    for start in range(0, len(outgoing), chunk):
        part = outgoing[start:start + chunk]
        if time.monotonic() > deadline:
            outcomes.transient += [(row, "not attempted before the batch's deadline") for row, _, _ in part]
            continue
        for (row, html, _), result in zip(part, smtp.send_many([mail for _, _, mail in part])):
            if isinstance(result, SendResult):
                outcomes.sent.append((row.id, row.contact_id, html))
            elif isinstance(result, PermanentSmtpError):
                outcomes.failed.append((row.id, str(result)))
                log.warning("deliver.rejected", contact_id=row.contact_id, reply=str(result))
            else:
                outcomes.transient.append((row, str(result)))
