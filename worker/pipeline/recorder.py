"""Writing delivery outcomes to the ledger: every round as soon as it is over, through a database outage.

Worker threads hand their rounds here and wait until the outcomes are committed before sending the
next round, so a crash can repeat only the messages of the rounds on the wire. Rounds that arrive
while a write is running are written together in the next transaction (group commit): a round is a
few messages, a transaction holds those of every thread of the process. A write that fails because
the database cannot be reached is retried with backoff for up to ``retry_for`` seconds, holding the
outcomes, so a short database outage does not make the recipients' messages go out again later.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import structlog
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from storage.db import dialect_insert
from storage.ledger import Claimed, finish, release
from storage.models import Campaign, CampaignMessage
from storage.statuses import RecipientStatus
from storage.timefmt import now as utcnow
from worker.channels.outcomes import Outcomes

log = structlog.get_logger()


@dataclass
class Round:
    """One round handed to the writer, and what became of it once written."""

    campaign_id: str
    outcomes: Outcomes
    max_attempts: int
    done: int = 0  # rows that reached a final status
    again: list[tuple[Claimed, str]] = field(default_factory=list)  # transient: pending again
    status: str | None = None  # the campaign's status, read in the same transaction
    written: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class OutcomeWriter:
    """Group-committing, outage-surviving writer of rounds (one per process)."""

    def __init__(self, sessions: sessionmaker[Session], *, retry_for: float = 120.0) -> None:
        self._sessions, self._retry_for = sessions, retry_for
        self._lock = threading.Lock()
        self._queue: list[Round] = []
        self._writing = False

    def write(self, campaign_id: str, outcomes: Outcomes, *, max_attempts: int) -> Round:
        """Write a round's outcomes (blocks until committed); raises when the database stayed
        unreachable for ``retry_for`` seconds."""
        item = Round(campaign_id, outcomes, max_attempts)
        with self._lock:
            self._queue.append(item)
            leader = not self._writing
            if leader:
                self._writing = True
        if leader:  # this thread writes whatever is queued, until nothing is
            while True:
                with self._lock:
                    group, self._queue = self._queue, []
                    if not group:
                        self._writing = False
                        break
                self._write_retrying(group)
        item.written.wait()
        if item.error is not None:
            raise item.error
        return item

    def _write_retrying(self, group: list[Round]) -> None:
        deadline, delay = time.monotonic() + self._retry_for, 0.25
        while True:
            try:
                self._write(group)
            except DBAPIError as exc:
                if time.monotonic() + delay > deadline:
                    for item in group:
                        item.error = exc
                        item.written.set()
                    return
                log.warning("deliver.record_retry", error=str(exc.orig or exc).splitlines()[0][:200],
                            rounds=len(group), retry_in=delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)  # short: outcomes must land before a lease runs out
            except BaseException as exc:  # noqa: BLE001 - a bug: each waiting thread raises it
                for item in group:
                    item.error = exc
                    item.written.set()
                return
            else:
                for item in group:
                    item.written.set()
                return

    def _write(self, group: list[Round]) -> None:
        now = utcnow()
        with self._sessions.begin() as session:
            for item in group:
                item.done = _write_round(session, item, now)
            statuses = dict(session.execute(select(Campaign.id, Campaign.status).where(
                Campaign.id.in_({item.campaign_id for item in group}))).all())
        for item in group:
            item.status = statuses.get(item.campaign_id)


def _write_round(session: Session, item: Round, now) -> int:
    outcomes = item.outcomes
    give_up = [(row.id, f"gave up after {row.attempts} attempts: {reply}")
               for row, reply in outcomes.transient if row.attempts >= item.max_attempts]
    item.again = [(row, reply) for row, reply in outcomes.transient if row.attempts < item.max_attempts]
    archive = [{"campaign_id": item.campaign_id, "contact_id": contact_id, "content": content,
                "created_at": now, "updated_at": now} for _, contact_id, content in outcomes.sent if content is not None]
    if archive:  # telephone rows send no content
        session.execute(dialect_insert(session, CampaignMessage)
                        .on_conflict_do_nothing(index_elements=["campaign_id", "contact_id"]), archive)
    done = finish(session, RecipientStatus.SENT, [(row_id, None) for row_id, _, _ in outcomes.sent], now,
                  artifact_key=outcomes.artifact_key)
    done += finish(session, RecipientStatus.FAILED, outcomes.failed + give_up, now)
    done += finish(session, RecipientStatus.SKIPPED, outcomes.skipped, now)
    release(session, [row.id for row, _ in item.again], now, reason=item.again[0][1] if item.again else None)
    return done
