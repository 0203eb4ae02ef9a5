"""The email channel: render each recipient's message and send it over the SMTP pool, a round at a time."""

from __future__ import annotations

import asyncio
from time import perf_counter

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
    """Send in rounds of ``rounds.size``. Each message's outcome is handed over to be written as soon
    as the relay answered, so a crash repeats at most the messages on the wire; the next round
    starts once the round's outcomes are written, and not at all when the campaign was paused or
    cancelled meanwhile.

    Returns the rows not attempted because the campaign stopped taking recipients; raises
    CampaignFault when the relay itself refuses (login, unreachable past its retry budget).
    """
    rate = rate or NoLimit()
    from worker.runtime.metrics import RENDER_EMAIL  # prometheus_client: once sending starts

    rendered = RENDER_EMAIL.observe
    for start in range(0, len(ready), rounds.size):
        part = ready[start:start + rounds.size]
        failed = Outcomes()
        outgoing: list[tuple[Claimed, str, OutgoingMail]] = []
        for item in part:
            started = perf_counter()
            try:
                email = runtime.email(item.contact, item.user)
            except RenderError as exc:
                failed.failed.append((item.row.id, str(exc)))
                log.warning("deliver.render_failed", contact_id=item.row.contact_id, error=str(exc))
                continue
            rendered(perf_counter() - started)
            # Compressed for the archive here, with the rendering, not in the SMTP event loop.
            outgoing.append((item.row, runtime.archive.pack(email.html),
                             OutgoingMail(email.envelope_from, [email.rcpt], email.data, crlf=True)))
        submitted = [rounds.submit(failed)] if failed else []
        untried: list[Claimed] = []
        faults: list[CampaignWideSmtpError] = []

        def done(index: int, result: object) -> asyncio.Future | None:  # in the SMTP event loop: never block
            row, archived, _ = outgoing[index]
            outcome = Outcomes()
            if isinstance(result, SendResult):
                # The connection's slot is held until this is written: at most a pool of messages
                # are ever accepted by the relay and not yet in the ledger (what a crash repeats).
                outcome.sent.append((row.id, row.contact_id, archived))
                written = asyncio.get_running_loop().create_future()
                submitted.append(rounds.submit(outcome, wake=written))
                return written
            if isinstance(result, CampaignWideSmtpError):
                faults.append(result)
                untried.append(row)  # not the recipient's fault: given back, the attempt not counted
                return None
            if isinstance(result, PermanentSmtpError):
                outcome.failed.append((row.id, str(result)))
                log.warning("deliver.rejected", contact_id=row.contact_id, reply=str(result))
            else:
                outcome.transient.append((row, str(result)))
            submitted.append(rounds.submit(outcome))
            return None

        rate.acquire(len(outgoing))
        smtp.send_many([mail for _, _, mail in outgoing], on_done=done)
        go_on = rounds.settle(submitted)
        rest = untried + [item.row for item in ready[start + rounds.size:]]
        if faults:
            raise CampaignFault(str(faults[0]), rest)
        if not go_on:
            return rest
    return []
