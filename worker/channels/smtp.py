"""SMTP delivery: `SMTP_URL` parsing, a pool of reused connections, transient/permanent/campaign-wide errors.

Reusing connections and keeping several in flight is what makes sending fast (DESIGN.md costs:
one reused connection ~1,361 msg/s, ten ~2,564 msg/s, a new connection per message ~706 msg/s).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import aiosmtplib


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to connect: `smtp://[user:pass@]host:port[?starttls=true]` or `smtps://…`."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    use_tls: bool = False  # implicit TLS (smtps)
    start_tls: bool = False
    timeout: float = 30.0

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """Parse an SMTP_URL; a malformed one raises ValueError naming SMTP_URL (never its password)."""
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in ("smtp", "smtps"):
            raise ValueError(f"SMTP_URL: scheme must be smtp or smtps, not {parts.scheme or 'missing'!r}")
        if not parts.hostname:
            raise ValueError("SMTP_URL: a host is required, e.g. smtp://mail.example.com:25")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("SMTP_URL: port must be a number between 1 and 65535") from None
        if port == 0:
            raise ValueError("SMTP_URL: port must be a number between 1 and 65535")
        if parts.path not in ("", "/") or parts.fragment:
            raise ValueError("SMTP_URL: must not have a path or fragment")
        username = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        if username is not None and password is None or not username and password:
            raise ValueError("SMTP_URL: credentials need both a user name and a password (user:pass@)")
        start_tls, timeout = False, 30.0
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "starttls" and value.lower() in ("true", "1", "yes", "false", "0", "no"):
                start_tls = value.lower() in ("true", "1", "yes")
            elif key == "timeout" and _positive_float(value):
                timeout = float(value)
            else:
                raise ValueError(f"SMTP_URL: unsupported option {key}={value!r} (known: starttls=true|false)")
        if start_tls and scheme == "smtps":
            raise ValueError("SMTP_URL: starttls does not apply to smtps:// (already TLS)")
        return cls(
            host=parts.hostname, port=port or (465 if scheme == "smtps" else 25),
            username=username or None, password=password if username else None,
            use_tls=scheme == "smtps", start_tls=start_tls, timeout=timeout,
        )

    @property
    def safe_url(self) -> str:
        """The URL for logs, password hidden."""
        auth = f"{self.username}:***@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = "?starttls=true" if self.start_tls else ""
        return f"{'smtps' if self.use_tls else 'smtp'}://{auth}{host}:{self.port}{query}"


def _positive_float(value: str) -> bool:
    try:
        return float(value) > 0
    except ValueError:
        return False


class SmtpError(Exception):
    """A message was not accepted. `code` is the SMTP reply code when the server gave one."""

    def __init__(self, reply: str, code: int | None = None, recipient: str | None = None) -> None:
        super().__init__(reply)
        self.reply = reply
        self.code = code
        self.recipient = recipient


class TransientSmtpError(SmtpError):
    """4xx reply, lost/refused connection or timeout: retry later with backoff."""


class PermanentSmtpError(SmtpError):
    """5xx reply (e.g. "550 no such user"): do not retry; `str(exc)` is the server's reply."""


class CampaignWideSmtpError(SmtpError):
    """The relay or our account is at fault, not the recipient: nothing is gained by retrying
    message after message. The caller stops the campaign with `str(exc)` as part of an actionable
    sentence (it names SMTP_URL and what to fix, never the password). `reply` is the server's reply
    or the network error behind it; `code` the reply code when there was one."""

    def __init__(self, sentence: str, reply: str | None = None, code: int | None = None) -> None:
        super().__init__(sentence, code)
        self.reply = reply if reply is not None else sentence

    def again(self) -> CampaignWideSmtpError:
        """A fresh exception of the same class and text (no traceback) for another send."""
        return type(self)(str(self), self.reply, self.code)


class SmtpLoginRefused(CampaignWideSmtpError):
    """The server refused our AUTH (535 and friends), or offers no AUTH while SMTP_URL has
    credentials. Not retried: the same password fails the same way."""

    @classmethod
    def of(cls, config: SmtpConfig, reply: str, code: int | None = None) -> SmtpLoginRefused:
        if code is None:  # no AUTH at all, or none we can use
            return cls(f"the SMTP server at {config.safe_url} does not let us log in ({reply}): remove the "
                       "user name and password from SMTP_URL, or use starttls=true or smtps:// in SMTP_URL "
                       "if it offers login over TLS only", reply, code)
        if "tls" in reply.lower():
            return cls(f"the SMTP server at {config.safe_url} refused our login ({reply}): use starttls=true "
                       "or smtps:// in SMTP_URL", reply, code)
        return cls(f"the SMTP server at {config.safe_url} refused our login ({reply}): check the user name "
                   "and password in SMTP_URL", reply, code)


class RelayUnreachable(CampaignWideSmtpError):
    """No usable connection to the server: refused, timeout, DNS, TLS handshake, a 421/554
    greeting, EHLO refused, connection lost before the greeting. Retried by SmtpSender only within
    the pool's bounded probe schedule (see SmtpPool)."""

    @classmethod
    def of(cls, config: SmtpConfig, reason: str, code: int | None = None, *,
           tls: bool = False) -> RelayUnreachable:
        if tls:
            return cls(f"the SMTP server at {config.safe_url} cannot be reached ({reason}): check that SMTP_URL's "
                       "scheme (smtp:// or smtps://) and starttls option match the server", reason, code)
        if code is not None:
            return cls(f"the SMTP server at {config.safe_url} refuses our connection ({reason}): check that it "
                       "accepts mail from this host and SMTP_URL points at it", reason, code)
        return cls(f"the SMTP server at {config.safe_url} cannot be reached ({reason}): check that it runs "
                   "and SMTP_URL points at it", reason, code)


@dataclass(frozen=True)
class SendResult:
    """The server accepted the message for `accepted`; `refused` maps others to (code, text)."""

    accepted: tuple[str, ...]
    reply: str
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    attempts: int = 1


@dataclass(frozen=True)
class OutgoingMail:
    """One message with its explicit envelope (recipients are never taken from the headers)."""

    envelope_from: str
    recipients: Sequence[str]
    message: bytes


def _reply(code: int, text: str) -> str:
    return f"{code} {text}".strip()


def _classify(exc: BaseException) -> SmtpError | None:
    """Map an aiosmtplib/socket error of a mail transaction to a Transient or Permanent SmtpError
    (None: not SMTP's). Errors while connecting are _connect_error's."""
    if isinstance(exc, SmtpError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        first = exc.recipients[0]
        kind = PermanentSmtpError if all(r.code >= 500 for r in exc.recipients) else TransientSmtpError
        return kind(_reply(first.code, first.message), first.code, first.recipient)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        kind = PermanentSmtpError if exc.code >= 500 else TransientSmtpError
        return kind(_reply(exc.code, exc.message), exc.code, getattr(exc, "recipient", None))
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return PermanentSmtpError(f"not supported by the server: {exc}")
    if isinstance(exc, (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError)):
        return TransientSmtpError(f"connection error: {exc or type(exc).__name__}")
    if isinstance(exc, ValueError):  # aiosmtplib's address check: the address can never be sent
        return PermanentSmtpError(f"invalid address: {exc}")
    return None


def _connect_error(exc: BaseException, config: SmtpConfig) -> CampaignWideSmtpError | None:
    """Map a failure to open a connection (connect, greeting, EHLO, STARTTLS, AUTH) to
    SmtpLoginRefused or RelayUnreachable: never the recipient's fault. None: not SMTP's."""
    if isinstance(exc, CampaignWideSmtpError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        reply = _reply(exc.code, exc.message)
        if exc.code < 500:  # 454 temporary authentication failure: the server's trouble, not the password
            return RelayUnreachable.of(config, f"login failed for now: {reply}", exc.code)
        return SmtpLoginRefused.of(config, reply, exc.code)
    if isinstance(exc, aiosmtplib.SMTPException) and not isinstance(exc, aiosmtplib.SMTPResponseException) \
            and "auth" in exc.message.lower():
        # "The SMTP AUTH extension is not supported by this server", "No suitable authentication method"
        no_auth = "not supported" in exc.message  # aiosmtplib: "The SMTP AUTH extension is not supported..."
        return SmtpLoginRefused.of(config, "it offers no AUTH" if no_auth else exc.message.rstrip("."))
    causes = _causes(exc)
    if any(isinstance(c, ssl.SSLError) for c in causes):
        ssl_error = next(c for c in causes if isinstance(c, ssl.SSLError))
        return RelayUnreachable.of(config, f"TLS handshake failed: {ssl_error}", tls=True)
    if isinstance(exc, aiosmtplib.SMTPResponseException):  # greeting 421/554, EHLO or STARTTLS refused
        what = "greeting" if isinstance(exc, aiosmtplib.SMTPConnectResponseError) else \
            "EHLO refused" if isinstance(exc, aiosmtplib.SMTPHeloError) else "refused"
        return RelayUnreachable.of(config, f"{what}: {_reply(exc.code, exc.message)}", exc.code)
    if any(isinstance(c, socket.gaierror) for c in causes):
        return RelayUnreachable.of(config, f"host name {config.host} not found")
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return RelayUnreachable.of(config, "connection refused")
    if any(isinstance(c, (asyncio.TimeoutError, TimeoutError)) for c in causes):
        return RelayUnreachable.of(config, f"no answer within {config.timeout:g} s")
    if isinstance(exc, aiosmtplib.SMTPConnectError) and \
            any(isinstance(c, aiosmtplib.SMTPServerDisconnected) for c in causes):
        return RelayUnreachable.of(config, "connection closed before the greeting")
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return RelayUnreachable.of(config, "connection closed while connecting")
    if "starttls" in str(exc).lower():  # "SMTP STARTTLS extension not supported by server."
        return RelayUnreachable.of(config, str(exc).rstrip("."), tls=True)
    if isinstance(exc, (aiosmtplib.SMTPException, OSError, ValueError)):
        return RelayUnreachable.of(config, str(exc) or type(exc).__name__)
    return None


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _closing(exc: BaseException | None, refused: dict[str, Any] | None = None) -> bool:
    """Did the server announce that it closes the connection (421, RFC 5321 3.8)?"""
    codes = [r.code for r in exc.recipients] if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) else \
        [exc.code] if isinstance(exc, aiosmtplib.SMTPResponseException) else []
    codes += [r.code for r in (refused or {}).values()]
    return 421 in codes


class _Smtp(aiosmtplib.SMTP):
    """aiosmtplib.SMTP remembering whether the RSET that sendmail sends after an error failed
    (sendmail swallows that failure, after which the session's state is unknown)."""

    rset_failed = False

    async def rset(self, *args: Any, **kwargs: Any) -> aiosmtplib.SMTPResponse:
        try:
            return await super().rset(*args, **kwargs)
        except BaseException:
            self.rset_failed = True
            raise


class _Connection:
    __slots__ = ("smtp", "sent", "last_used")

    def __init__(self, smtp: _Smtp) -> None:
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
        self._slots = asyncio.Semaphore(size)
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

    async def send(self, envelope_from: str, recipients: Sequence[str], message: bytes) -> SendResult:
        """Send one message to exactly `recipients`. Raises TransientSmtpError or PermanentSmtpError
        for this message, or a CampaignWideSmtpError when no connection can be opened."""
        if self._closed:
            raise RuntimeError("SmtpPool is closed")
        if not recipients:
            raise PermanentSmtpError("no recipients")
        recipients = list(recipients)
        async with self._slots:
            conn = await self._checkout()
            conn.smtp.rset_failed = False
            try:
                refused, reply = await conn.smtp.sendmail(
                    envelope_from, recipients, message, mail_options=self._mail_options(
                        conn.smtp, envelope_from, recipients, message))
            except BaseException as exc:
                # After a reply error the session is usable again if the RSET that aiosmtplib sent
                # worked, unless the server announced its close (421): it may go on answering for a
                # few ms, and a message sent meanwhile can be queued while its 250 is lost (a
                # duplicate when retried). Anything else (lost connection, timeout) may not be usable.
                keep = isinstance(exc, (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused)) \
                    and not _closing(exc) and not conn.smtp.rset_failed
                self._checkin(conn, keep=keep)
                error = _classify(exc)
                if error is None:  # cancellation, or a bug: not an SMTP outcome
                    raise
                raise error from exc
            conn.sent += 1
            self._checkin(conn, keep=not _closing(None, refused))
        failed = {rcpt: (resp.code, resp.message) for rcpt, resp in refused.items()}
        accepted = tuple(r for r in recipients if r not in failed)
        return SendResult(accepted=accepted, reply=_reply(250, reply), refused=failed)

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
        smtp = _Smtp(
            hostname=cfg.host, port=cfg.port, username=cfg.username, password=cfg.password,
            use_tls=cfg.use_tls, start_tls=cfg.start_tls, tls_context=self._tls,
            timeout=cfg.timeout, local_hostname=self._local_hostname,
        )
        self.connection_attempts += 1
        try:
            await smtp.connect()
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()
        except BaseException as exc:
            smtp.close()
            error = _connect_error(exc, cfg)
            if error is None:  # cancellation, or a bug: not an SMTP outcome
                raise
            raise error from exc
        self._open += 1
        return _Connection(smtp)

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
    def _mail_options(smtp: aiosmtplib.SMTP, sender: str, rcpts: list[str], message: bytes) -> list[str]:
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

    def send_many(self, items: Sequence[OutgoingMail]) -> list[SendResult | Exception]:
        """Send all items concurrently; one outcome per item, in order (errors returned, not raised):
        SendResult, PermanentSmtpError, TransientSmtpError or a CampaignWideSmtpError."""
        if not items:
            return []
        loop, pool = self._started()
        future = asyncio.run_coroutine_threadsafe(self._send_batch(pool, items), loop)
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

    async def _send_batch(self, pool: SmtpPool, items: Sequence[OutgoingMail]) -> list[SendResult | Exception]:
        # The pool's semaphore keeps at most pool_size of these on the wire at once.
        tasks = (self._send_retrying(pool, item) for item in items)
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    async def _send_retrying(self, pool: SmtpPool, item: OutgoingMail) -> SendResult:
        transient_delays = iter(self.retry_delays)
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await pool.send(item.envelope_from, item.recipients, item.message)
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
                # After a fork the parent's loop thread does not exist here: start our own.
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="smtp-sender", daemon=True)
                thread.start()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
                self._pool = SmtpPool(self.config, self.pool_size, **self._pool_options)
            return self._loop, self._pool
