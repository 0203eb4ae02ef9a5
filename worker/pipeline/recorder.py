"""Writing delivery outcomes to the ledger as soon as they are known, through a database outage.

The email channel hands each message's outcome over the moment the relay answered (from the SMTP
event loop, without waiting), and a worker thread starts its next round only once its round's
outcomes are committed: a crash repeats at most the messages sent but not yet written, about what
was on the wire. One writer thread per process writes whatever was handed over while its last
write ran in one transaction, one statement per kind of outcome (group commit): idle, a
transaction holds one outcome; under load, dozens. A write that fails because the database cannot
be reached is retried with backoff for up to ``retry_for`` seconds, holding the outcomes, so a
database outage does not make the recipients' messages go out again later.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from storage.ledger import Claimed, touch_progress
from storage.outcome_writes import OutcomeRows, prepare_connection, write_outcomes
from storage.statuses import CampaignStatus, RecipientStatus
from storage.timefmt import now as utcnow
from worker.channels.outcomes import Outcomes

log = structlog.get_logger()

# A write waits up to LINGER for more outcomes, or until GROUP are waiting: fewer, larger transactions
# (a transaction costs about the same for one row as for fifty).
LINGER = 0.003
GROUP = 64


@dataclass
class Round:
    """One round handed to the writer, and what became of it once written."""

    campaign_id: str
    outcomes: Outcomes
    max_attempts: int
    done: int = 0  # rows that reached a final status
    again: list[tuple[Claimed, str]] = field(default_factory=list)  # transient: pending again
    # Set once written, for a round of ``ask_status`` (the one a thread waits for); other rounds
    # have none: they are written, in the order submitted, by the time a later one is.
    written: threading.Event | None = None
    error: BaseException | None = None
    wake: asyncio.Future | None = None  # resolved in its own event loop once written or failed
    wants_status: bool = False  # read the campaign's status once the rounds before this one are written
    status: str | None = None
    channel: str = ""  # the campaign's type: the label its outcomes are counted under (metrics)


def _settle(group: list[Round]) -> None:
    """Tell the waiting threads, and the event loops waiting on ``wake`` futures: one wake-up per
    loop for the whole group, not one per round (each costs a thread switch)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = defaultdict(list)
    for item in group:
        if item.written is not None:
            item.written.set()
        if item.wake is not None:
            by_loop[item.wake.get_loop()].append(item.wake)
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve_all, futures)
        except RuntimeError:  # the sender's event loop is gone (closing): nobody waits there
            pass


def _resolve_all(futures: list[asyncio.Future]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _count(group: list[Round]) -> None:
    """``campaign_dispatch_recipients_total``: what the group's write brought to each outcome, per
    channel (transient failures: ``retried`` when put back to pending, ``failed`` when given up)."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for item in group:
        outcomes, channel = item.outcomes, item.channel or "unknown"
        if not outcomes:
            continue
        counts[channel, "sent"] += len(outcomes.sent)
        counts[channel, "failed"] += len(outcomes.failed) + len(outcomes.transient) - len(item.again)
        counts[channel, "skipped"] += len(outcomes.skipped)
        counts[channel, "retried"] += len(item.again)
    if not counts:
        return
    try:
        from worker.runtime.metrics import count_recipients  # prometheus_client: once outcomes are written

        count_recipients(counts)
    except Exception:  # noqa: BLE001 - a metric must never stop the writer thread
        log.exception("deliver.count_failed")


class OutcomeWriter:
    """Group-committing, outage-surviving writer of outcomes (one per process, one writer thread)."""

    def __init__(self, sessions: sessionmaker[Session], *, retry_for: float = 120.0) -> None:
        self._sessions, self._retry_for = sessions, retry_for
        self._ready = threading.Condition()
        self._queue: list[Round] = []
        self._thread: threading.Thread | None = None
        self._noted: dict[str, float] = {}  # campaign id -> when its progress was last noted (monotonic)
        self._conn = None  # the writer's connection

    def submit(self, campaign_id: str, outcomes: Outcomes, *, max_attempts: int,
               wake: asyncio.Future | None = None, wants_status: bool = False, channel: str = "") -> Round:
        """Queue outcomes for the writer thread and return at once (safe from an event loop);
        ``wake`` is resolved in its loop once they are committed (or ``Round.error`` says why not), and
        a thread learns it from a later ``ask_status`` (see ``wait``). Once committed they are counted
        under ``channel``."""
        item = Round(campaign_id, outcomes, max_attempts, wake=wake, wants_status=wants_status, channel=channel,
                     written=threading.Event() if wants_status else None)
        with self._ready:
            self._queue.append(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="outcome-writer", daemon=True)
                self._thread.start()
            self._ready.notify()
        return item

    def ask_status(self, campaign_id: str) -> Round:
        """Queue a read of the campaign's status behind everything submitted so far: once written,
        ``Round.status`` is the status as of after those outcomes were committed, as a fresh read
        then would give. The writer reads it in the transaction it writes anyway, once for all the
        threads asking at that moment, instead of each thread reading it in a transaction of its own."""
        return self.submit(campaign_id, Outcomes(), max_attempts=0, wants_status=True)

    def close(self) -> None:
        """Close the writer's connection (the workers are stopped: nothing is being written)."""
        with self._ready:
            conn, self._conn = self._conn, None
        if conn is not None and not self._queue:
            conn.close()

    @staticmethod
    def wait(item: Round) -> Round:
        """Wait until a round of ``ask_status`` is committed; raise what stopped it (the database
        stayed unreachable for ``retry_for`` seconds, or a bug). The writer writes rounds in the
        order they were submitted, so by then every round submitted before it is written too, or
        failed: ``outcome`` tells which."""
        if item.written is None:
            raise ValueError("only a round of ask_status is waited for")
        item.written.wait()
        return OutcomeWriter.outcome(item)

    @staticmethod
    def outcome(item: Round) -> Round:
        """A round submitted before one ``wait`` returned for: written, or raise what stopped it.
        (One threading.Event a round cost ~2 us a message.)"""
        if item.error is not None:
            raise item.error
        return item

    def _run(self) -> None:
        # Whatever was submitted while the last write ran (or, when no connection waits on it, within
        # LINGER of the first waiting outcome) is written together: under load a transaction holds
        # the outcomes of many sends.
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
                until = time.monotonic() + LINGER
                # No lingering while a connection waits for its message to be recorded (``wake``):
                # its slot is held, so waiting for company would idle the relay connection.
                while (len(self._queue) < GROUP and not any(item.wake for item in self._queue)
                       and (left := until - time.monotonic()) > 0):
                    self._ready.wait(left)
                group, self._queue = self._queue, []
            self._write_retrying(group)

    def _write_retrying(self, group: list[Round]) -> None:
        deadline, delay = time.monotonic() + self._retry_for, 0.25
        while True:
            try:
                self._write(group)
            except DBAPIError as exc:
                if time.monotonic() + delay > deadline:
                    for item in group:
                        item.error = exc
                    _settle(group)
                    return
                log.warning("deliver.record_retry", error=str(exc.orig or exc).splitlines()[0][:200],
                            rounds=len(group), retry_in=delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)  # short: outcomes must land before a lease runs out
            except BaseException as exc:  # noqa: BLE001 - a bug: each waiting thread raises it
                for item in group:
                    item.error = exc
                _settle(group)
                return
            else:
                _count(group)  # before the waiting threads go on: whoever saw a round written sees it counted
                _settle(group)
                self._note_progress(group)
                return

    def _note_progress(self, group: list[Round]) -> None:
        """Note that these campaigns moved (reconcile's stall detection), at most once a second each,
        in a short transaction of its own: the campaign row is shared by every worker."""
        clock = time.monotonic()
        due = {item.campaign_id for item in group if item.done} - {
            cid for cid, at in self._noted.items() if clock - at < 1.0}
        if not due:
            return
        try:
            with self._sessions.begin() as session:
                for campaign_id in due:
                    touch_progress(session, campaign_id, utcnow(), timedelta(seconds=1))
        except DBAPIError as exc:  # only a hint for reconcile; the outcomes are written
            log.warning("deliver.progress_not_noted", error=str(exc.orig or exc).splitlines()[0][:200])
            return
        self._noted.update((cid, clock) for cid in due)

    def _write(self, group: list[Round]) -> None:
        """One write for the whole group (one statement on PostgreSQL), not one per round: a write
        costs about as much for one row as for fifty."""
        now = utcnow()
        rows = OutcomeRows()
        for item in group:
            outcomes = item.outcomes
            item.again = [(row, reply) for row, reply in outcomes.transient if row.attempts < item.max_attempts]
            rows.final += [(row_id, RecipientStatus.SENT, None, outcomes.artifact_key)
                           for row_id, _, _ in outcomes.sent]
            rows.final += [(row_id, RecipientStatus.FAILED, reason, None) for row_id, reason in outcomes.failed]
            rows.final += [(row.id, RecipientStatus.FAILED, f"gave up after {row.attempts} attempts: {reply}", None)
                           for row, reply in outcomes.transient if row.attempts >= item.max_attempts]
            rows.final += [(row_id, RecipientStatus.SKIPPED, reason, None) for row_id, reason in outcomes.skipped]
            rows.again += [(row.id, reply) for row, reply in item.again]
            rows.archive.update((row_id, content) for row_id, _, content in outcomes.sent
                                if content is not None)  # telephone: none
            if item.wants_status:
                rows.asking.add(item.campaign_id)
        # On the writer's own connection, kept between writes: no session, no pool checkout (and
        # its ping) per write.
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = prepare_connection(self._sessions.kw["bind"].connect())
        conn = self._conn
        try:
            with conn.begin():  # on PostgreSQL autocommit: nothing more on the wire than the statement
                statuses = write_outcomes(conn, rows, now)
        except DBAPIError:
            conn.invalidate()  # a fresh connection for the retry
            raise
        for item in group:
            outcomes = item.outcomes
            # what this round brought to a final status (its rows, written above or by no one else)
            item.done = len(outcomes.sent) + len(outcomes.failed) + len(outcomes.skipped) \
                + len(outcomes.transient) - len(item.again)
            if item.wants_status:  # a campaign deleted meanwhile is as good as cancelled
                item.status = statuses.get(item.campaign_id, CampaignStatus.CANCELLED)
