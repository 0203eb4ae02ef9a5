"""SMTP delivery: a pool of reused connections and the thread-safe sender the worker threads use.

Reusing connections and keeping several in flight is what makes sending fast (DESIGN.md costs:
one reused connection ~1,361 msg/s, ten ~2,564 msg/s, a new connection per message ~706 msg/s).
The URL is parsed in ``smtp_config``; outcomes and error classification are in ``smtp_outcomes``;
each connection's mail transactions (pipelined where the relay offers it) are ``smtp_channel``'s.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiosmtplib
import uvloop

from worker.channels.smtp_channel import MailChannel
from worker.channels.smtp_config import SmtpConfig
from worker.channels.smtp_outcomes import (
    CampaignWideSmtpError,
    OutgoingMail,
    PermanentSmtpError,
    RelayUnreachable,
    SendResult,
    SmtpError,
    SmtpLoginRefused,
    TransientSmtpError,
    _classify,
    _closing,
    _reply,
    _connect_error,
)

__all__ = [
    "CampaignWideSmtpError", "OutgoingMail", "PermanentSmtpError", "RelayUnreachable", "SendResult", "SmtpConfig",
    "SmtpError", "SmtpLoginRefused", "SmtpPool", "SmtpSender", "TransientSmtpError",
]


class _Connection:
    __slots__ = ("smtp", "sent", "last_used")

    def __init__(self, smtp: MailChannel) -> None:
        self.smtp, self.sent, self.last_used = smtp, 0, time.monotonic()


PROBE_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
"""After the n-th failed connection attempt in a row, the pool is down for PROBE_DELAYS[n-1] s
(the last delay once past the end); past the end a RelayUnreachable is final for SmtpSender."""


class SmtpPool:
    """Up to `size` SMTP connections, each reused for many messages. Use from one event loop.

    A circuit breaker guards new connections. While no connection is open (at the start, after
    the relay went away), connection attempts are single-flight: one send probes and the others
    wait for its result, so a relay that refuses us sees one attempt, not `size`. An attempt that
    fails with a CampaignWideSmtpError (SmtpLoginRefused, RelayUnreachable) puts the pool "down"
    for `probe_delays[n-1]` seconds (n: failures in a row): sends that need a new connection fail
    at once with a fresh copy of that error, without touching the network, until the next probe is
    due. Sends wait for an open connection instead while others are still in use (a relay limiting
    connections per client). The first successful connection clears the state.
    """

    def __init__(self, config: SmtpConfig, size: int = 10, *, max_messages_per_connection: int = 1000,
                 idle_check_after: float = 30.0, local_hostname: str | None = None,
                 probe_delays: Sequence[float] = PROBE_DELAYS) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        if not probe_delays or any(d <= 0 for d in probe_delays):
            raise ValueError("probe_delays must be one or more delays of more than 0 s")
        self.config, self.size = config, size
        self.probe_delays = tuple(probe_delays)
        self._max_messages, self._idle_check_after = max_messages_per_connection, idle_check_after
        self._local_hostname = local_hostname or socket.getfqdn()  # once, not per connection
        self._tls = ssl.create_default_context() if config.use_tls or config.start_tls else None
        self._slots = asyncio.Semaphore(size)  # connections lent out
        self._unsettled = asyncio.Semaphore(size)  # messages past their 354 and not yet settled
        self._idle: list[_Connection] = []
        self._open = 0  # connections open: idle or sending
        self._quitting: set[asyncio.Task] = set()
        self._closed = False
        # The circuit breaker: failed connection attempts in a row, the error, until when.
        self.failures = 0
        self._down: CampaignWideSmtpError | None = None
        self._down_until = 0.0
        self._probe: asyncio.Future[None] | None = None
        self._changed = asyncio.Event()  # set (and replaced) when a connection comes back or closes
        self.connection_attempts = 0
        from worker.runtime.metrics import SMTP_SEND_SECONDS  # prometheus_client: once sending starts

        self._send_seconds = SMTP_SEND_SECONDS.observe

    async def send(self, envelope_from: str, recipients: Sequence[str], message: bytes,
                   settle: Callable[[SendResult], Awaitable[None]] | None = None, *,
                   crlf: bool = False) -> SendResult:
        """Send one message to exactly `recipients`. Raises TransientSmtpError or PermanentSmtpError
        for this message, or a CampaignWideSmtpError when no connection can be opened.

        ``settle(result)``, when given, is awaited once the message was accepted: the caller records
        the outcome there. Its connection goes on to the next message meanwhile, but the content of
        a message with a ``settle`` goes out only while fewer than `size` such messages are
        accepted or on the wire and not yet settled: that is all a crash can repeat. ``crlf``: the
        message's line ends are all CRLF already (``OutgoingMail.crlf``)."""
        if self._closed:
            raise RuntimeError("SmtpPool is closed")
        if not recipients:
            raise PermanentSmtpError("no recipients")
        recipients = list(recipients)
        holding = False  # one of the `size` places of a message that may be accepted and unrecorded

        async def before_content() -> None:
            nonlocal holding
            await self._unsettled.acquire()
            holding = True

        try:
            async with self._slots:
                conn = await self._checkout()
                conn.smtp.rset_failed = False
                started = time.perf_counter()
                # With PIPELINING the connection goes on to the next message as soon as this one's
                # content is queued (the next one's commands share its write); this send awaits
                # its final reply meanwhile, outside its slot.
                lend = conn.smtp.pipelining
                try:
                    refused, final = await conn.smtp.start(
                        envelope_from, recipients, message,
                        self._mail_options(conn.smtp, envelope_from, recipients, message),
                        before_content if settle is not None else None, lend=lend, crlf=crlf)
                    if not lend:
                        reply = await final
                except BaseException as exc:
                    # After a reply error the session is usable again if the RSET that followed
                    # worked, unless the server announced its close (421): it may go on answering
                    # for a few ms, and a message sent meanwhile can be queued while its 250 is
                    # lost (a duplicate when retried). Anything else (lost connection, timeout)
                    # may not be usable.
                    keep = isinstance(exc, (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused)) \
                        and not _closing(exc) and not conn.smtp.rset_failed
                    self._checkin(conn, keep=keep)
                    self._raise_outcome(exc, started)
                conn.sent += 1
                self._checkin(conn, keep=not _closing(None, refused))
            if lend:
                try:
                    reply = await final
                except BaseException as exc:
                    # The connection is another message's by now: a refused content leaves it
                    # usable; a 421, a timeout or a lost connection closed it (the channel's own
                    # doing), and whoever holds it meets that.
                    self._raise_outcome(exc, started)
            self._send_seconds(time.perf_counter() - started)
            failed = {rcpt: (resp.code, resp.message) for rcpt, resp in refused.items()}
            accepted = tuple(r for r in recipients if r not in failed)
            result = SendResult(accepted=accepted, reply=_reply(250, reply), refused=failed)
            if settle is not None:
                await settle(result)
        finally:
            if holding:
                self._unsettled.release()
        return result

    def _raise_outcome(self, exc: BaseException, started: float) -> None:
        """Raise what a failed mail transaction means for its message (the SmtpError), or ``exc``
        itself when it is not an SMTP outcome (a cancellation, a bug)."""
        if isinstance(exc, Exception):  # a transaction the relay (or the network) ended; not a cancel
            self._send_seconds(time.perf_counter() - started)
        error = _classify(exc)
        if error is None:
            raise exc
        raise error from exc

    async def probe(self) -> None:
        """Open one connection as sending does (TLS, EHLO, login) and quit it: raises the
        CampaignWideSmtpError a send would meet, with its sentence (health checks)."""
        conn = await self._connect()
        self._open -= 1
        await self._quit(conn)

    def retry_after(self) -> float | None:
        """Seconds until the next connection attempt is due (0: now), or None when the pool has
        failed more than len(probe_delays) attempts in a row: a RelayUnreachable is then final."""
        if self._down is None:
            return 0.0
        if self.failures > len(self.probe_delays):
            return None
        return max(0.0, self._down_until - time.monotonic())

    async def close(self) -> None:
        """Quit idle connections; connections still sending are closed when they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(c) for c in idle), *self._quitting)

    async def _checkout(self) -> _Connection:
        while True:
            conn = await self._take_idle()
            if conn is not None:
                return conn
            due = self._down is None or time.monotonic() >= self._down_until
            if self._probe is not None:  # someone is trying: wait for the outcome, then look again
                await asyncio.shield(self._probe)
            elif self._open and self._down is None:  # the relay works: one more connection, in parallel
                try:
                    return await self._connect()
                except CampaignWideSmtpError as exc:
                    self._trip(exc, probing=False)
                    if not self._open:
                        raise
            elif due:  # nothing open (or down and due): probe, single-flight
                try:
                    return await self._probe_connect()
                except CampaignWideSmtpError:
                    if not self._open:
                        raise
            elif self._open:  # down, but connections are in use: wait for one of them
                await self._wait_changed()
            else:
                raise self._down.again()

    async def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()  # LIFO: the warmest connection; cold ones time out server-side
            if not conn.smtp.is_connected:
                self._discard(conn)
                continue
            if time.monotonic() - conn.last_used < self._idle_check_after:
                return conn
            try:  # idle a while: the server may have hung up without us noticing
                await conn.smtp.noop()
                return conn
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                self._discard(conn)
        return None

    async def _probe_connect(self) -> _Connection:
        probe = self._probe = asyncio.get_running_loop().create_future()
        try:
            conn = await self._connect()
        except CampaignWideSmtpError as exc:
            self._trip(exc, probing=True)
            raise
        else:
            self.failures, self._down = 0, None
            return conn
        finally:
            self._probe = None
            probe.set_result(None)
            self._notify()

    def _trip(self, error: CampaignWideSmtpError, *, probing: bool) -> None:
        """A connection attempt failed: down for the next delay (one count per probe, so that the
        `size` attempts of a relay that went away at once count as one)."""
        if probing or self._down is None:
            self.failures += 1
            delay = self.probe_delays[min(self.failures, len(self.probe_delays)) - 1]
            self._down_until = time.monotonic() + delay
        self._down = error

    async def _connect(self) -> _Connection:
        cfg = self.config
        smtp = aiosmtplib.SMTP(
            hostname=cfg.host, port=cfg.port, username=cfg.username, password=cfg.password,
            use_tls=cfg.use_tls, start_tls=cfg.start_tls, tls_context=self._tls,
            timeout=cfg.timeout, local_hostname=self._local_hostname,
        )
        self.connection_attempts += 1
        try:
            await smtp.connect()
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()
            channel = MailChannel(smtp, timeout=cfg.timeout)
        except BaseException as exc:
            smtp.close()
            error = _connect_error(exc, cfg)
            if error is None:  # cancellation, or a bug: not an SMTP outcome
                raise
            raise error from exc
        self._open += 1
        return _Connection(channel)

    def _checkin(self, conn: _Connection, *, keep: bool) -> None:
        conn.last_used = time.monotonic()
        if keep and not self._closed and conn.smtp.is_connected and conn.sent < self._max_messages:
            self._idle.append(conn)
            self._notify()
        elif keep and conn.smtp.is_connected:  # retired after max messages: say goodbye politely
            self._open -= 1
            self._notify()
            task = asyncio.ensure_future(self._quit(conn))
            self._quitting.add(task)
            task.add_done_callback(self._quitting.discard)
        else:
            self._discard(conn)

    def _discard(self, conn: _Connection) -> None:
        conn.smtp.close()
        self._open -= 1
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _wait_changed(self) -> None:
        await self._changed.wait()

    @staticmethod
    async def _quit(conn: _Connection) -> None:
        try:
            await asyncio.wait_for(conn.smtp.quit(), timeout=5)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            pass
        finally:
            conn.smtp.close()

    @staticmethod
    def _mail_options(smtp: MailChannel, sender: str, rcpts: list[str], message: bytes) -> list[str]:
        options = []
        if not (sender.isascii() and all(r.isascii() for r in rcpts)):
            options.append("SMTPUTF8")
        if not message.isascii() and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        return options


class SmtpSender:
    """Synchronous, thread-safe facade for worker threads: one event loop thread and one SmtpPool
    per process (re-created after a fork), batches sent concurrently, transient errors retried.

    Outcomes per item: SendResult; PermanentSmtpError (this recipient, never retried);
    TransientSmtpError (this message, after `retry_delays`); SmtpLoginRefused (at once, never
    retried: one connection attempt for the whole batch); RelayUnreachable (after the pool's probe
    schedule, ~15.5 s and 6 attempts by default, or at once while the pool stays down after it).
    A CampaignWideSmtpError is the whole campaign's: the caller stops it, saying `str(exc)`.
    `pool_options` go to SmtpPool (max_messages_per_connection, probe_delays...)."""

    def __init__(self, config: SmtpConfig, *, pool_size: int = 10,
                 retry_delays: Sequence[float] = (0.5, 1.0, 2.0), **pool_options: Any) -> None:
        self.config, self.pool_size = config, pool_size
        self.retry_delays = tuple(retry_delays)
        self._pool_options = pool_options
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pool: SmtpPool | None = None

    def send_many(self, items: Sequence[OutgoingMail],
                  on_done: Callable[[int, SendResult | Exception], Awaitable[None] | None] | None = None,
                  ) -> list[SendResult | Exception]:
        """Send all items concurrently; one outcome per item, in order (errors returned, not raised):
        SendResult, PermanentSmtpError, TransientSmtpError or a CampaignWideSmtpError.

        ``on_done(index, outcome)`` is called for each item as soon as its outcome is known, in the
        sender's event loop thread: it must not block, but it may return an awaitable, which for an
        accepted message is awaited before the connection's slot is given up (see SmtpPool.send)."""
        if not items:
            return []
        loop, pool = self._started()
        future = asyncio.run_coroutine_threadsafe(self._send_batch(pool, items, on_done), loop)
        return future.result()

    def send(self, envelope_from: str, recipients: Sequence[str], message: bytes) -> SendResult:
        """Send one message; raises TransientSmtpError (after retries), PermanentSmtpError or a
        CampaignWideSmtpError (SmtpLoginRefused, RelayUnreachable)."""
        (outcome,) = self.send_many([OutgoingMail(envelope_from, recipients, message)])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def close(self) -> None:
        """Close the pool's connections and stop the loop thread."""
        with self._lock:
            loop, thread, pool = self._loop, self._thread, self._pool
            self._loop = self._thread = self._pool = None
            if loop is None or self._pid != os.getpid():
                return
            asyncio.run_coroutine_threadsafe(pool.close(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()

    def __enter__(self) -> SmtpSender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def _send_batch(self, pool: SmtpPool, items: Sequence[OutgoingMail],
                          on_done: Callable[[int, SendResult | Exception], Awaitable[None] | None] | None = None,
                          ) -> list[SendResult | Exception]:
        # The pool's semaphore keeps at most pool_size of these on the wire at once.
        async def one(index: int, item: OutgoingMail) -> SendResult | Exception:
            async def settle(result: SendResult) -> None:
                pending = on_done(index, result) if on_done is not None else None
                if pending is not None:
                    await pending

            try:
                return await self._send_retrying(pool, item, settle)
            except Exception as exc:  # noqa: BLE001 - an outcome, returned as send_many promises
                pending = on_done(index, exc) if on_done is not None else None
                if pending is not None:
                    await pending
                return exc

        return list(await asyncio.gather(*(one(i, item) for i, item in enumerate(items))))

    async def _send_retrying(self, pool: SmtpPool, item: OutgoingMail,
                             settle: Callable[[SendResult], Awaitable[None]] | None = None) -> SendResult:
        transient_delays = iter(self.retry_delays)
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await pool.send(item.envelope_from, item.recipients, item.message, settle, crlf=item.crlf)
            except SmtpLoginRefused:
                raise  # the same password fails the same way: final at once
            except RelayUnreachable:
                # Wait for the pool's next probe (all items share it: one connection attempt);
                # None once the pool's probe schedule is spent: final.
                wait = pool.retry_after()
                if wait is None:
                    raise
                await asyncio.sleep(wait)
            except TransientSmtpError:
                delay = next(transient_delays, None)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
            else:
                return result if attempt == 1 else SendResult(
                    result.accepted, result.reply, result.refused, attempts=attempt)

    def _started(self) -> tuple[asyncio.AbstractEventLoop, SmtpPool]:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                # After a fork the parent's loop thread does not exist here: start our own. uvloop:
                # the loop's own work is a quarter of the pool's CPU a message with asyncio's
                # (benchmarks/smtp_client.py: 0.099 -> 0.075 ms a message).
                loop = uvloop.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="smtp-sender", daemon=True)
                thread.start()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
                self._pool = SmtpPool(self.config, self.pool_size, **self._pool_options)
            return self._loop, self._pool
