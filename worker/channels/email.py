"""The email channel: render each recipient's message and send it over the SMTP pool, a round at a time."""

from __future__ import annotations

import structlog

from renderers.errors import RenderError
from storage.ledger import Claimed
from worker.channels.campaign_runtime import CampaignRuntime
from worker.channels.outcomes import CampaignFault, Outcomes, Ready, Rounds
from worker.channels.rate import Limiter, NoLimit
from worker.channels.smtp import CampaignWideSmtpError, OutgoingMail, PermanentSmtpError, SendResult, SmtpSender

log = structlog.get_logger()


def send_emails(smtp: SmtpSender, runtime: CampaignRuntime, ready: list[Ready], rounds: Rounds, *,
                rate: Limiter | None = None) -> list[Claimed]:
    """Send in rounds of ``rounds.size``, each recorded before the next starts, so a crash repeats at
    most the round on the wire, and a pause or cancel stops the batch after its round in flight.

    Returns the rows not attempted because the campaign stopped taking recipients; raises
    CampaignFault when the relay itself refuses (login, unreachable past its retry budget).
    """
    rate = rate or NoLimit()
    for start in range(0, len(ready), rounds.size):
        part, outcomes = ready[start:start + rounds.size], Outcomes()
        outgoing: list[tuple[Claimed, str, OutgoingMail]] = []
        for item in part:
            try:
                email = runtime.email(item.contact, item.user)
            except RenderError as exc:
                outcomes.failed.append((item.row.id, str(exc)))
                log.warning("deliver.render_failed", contact_id=item.row.contact_id, error=str(exc))
                continue
            outgoing.append((item.row, email.html, OutgoingMail(email.envelope_from, [email.rcpt], email.data)))
        rate.acquire(len(outgoing))
        fault: CampaignWideSmtpError | None = None
        untried: list[Claimed] = []
        for (row, html, _), result in zip(outgoing, smtp.send_many([mail for _, _, mail in outgoing])):
            if isinstance(result, SendResult):
                outcomes.sent.append((row.id, row.contact_id, html))
            elif isinstance(result, CampaignWideSmtpError):
                fault = fault or result
                untried.append(row)  # not the recipient's fault: given back, the attempt not counted
            elif isinstance(result, PermanentSmtpError):
                outcomes.failed.append((row.id, str(result)))
                log.warning("deliver.rejected", contact_id=row.contact_id, reply=str(result))
            else:
                outcomes.transient.append((row, str(result)))
        go_on = rounds.record(outcomes)
        rest = untried + [item.row for item in ready[start + rounds.size:]]
        if fault is not None:
            raise CampaignFault(str(fault), rest)
        if not go_on:
            return rest
    return []
