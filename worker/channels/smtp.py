"""SMTP delivery: `SMTP_URL` parsing, a pool of reused connections, transient/permanent errors.

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
    """Map an aiosmtplib/socket error to a Transient or Permanent SmtpError (None: not SMTP's)."""
    if isinstance(exc, SmtpError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        first = exc.recipients[0]
        kind = PermanentSmtpError if all(r.code >= 500 for r in exc.recipients) else TransientSmtpError
        return kind(_reply(first.code, first.message), first.code, first.recipient)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        # Bad credentials are the service's fault, not the recipient's: never fail a recipient for it.
        return TransientSmtpError(f"authentication failed: {_reply(exc.code, exc.message)}", exc.code)
    if isinstance(exc, (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPHeloError)):
        return TransientSmtpError(f"cannot connect: {exc}", getattr(exc, "code", None))
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


class _Connection:
    __slots__ = ("smtp", "sent", "last_used")

    def __init__(self, smtp: aiosmtplib.SMTP) -> None:
        self.smtp, self.sent, self.last_used = smtp, 0, time.monotonic()


class SmtpPool:
    """Up to `size` SMTP connections, each reused for many messages. Use from one event loop."""

    def __init__(self, config: SmtpConfig, size: int = 10, *, max_messages_per_connection: int = 1000,
                 idle_check_after: float = 30.0, local_hostname: str | None = None) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.config, self.size = config, size
        self._max_messages, self._idle_check_after = max_messages_per_connection, idle_check_after
        self._local_hostname = local_hostname or socket.getfqdn()  # once, not per connection
        self._tls = ssl.create_default_context() if config.use_tls or config.start_tls else None
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Connection] = []
        self._quitting: set[asyncio.Task] = set()
        self._closed = False

    async def send(self, envelope_from: str, recipients: Sequence[str], message: bytes) -> SendResult:
        """Send one message to exactly `recipients`; raises TransientSmtpError or PermanentSmtpError."""
        if self._closed:
            raise RuntimeError("SmtpPool is closed")
        if not recipients:
            raise PermanentSmtpError("no recipients")
        recipients = list(recipients)
        async with self._slots:
            conn = await self._checkout()
            try:
                refused, reply = await conn.smtp.sendmail(
                    envelope_from, recipients, message, mail_options=self._mail_options(
                        conn.smtp, envelope_from, recipients, message))
            except BaseException as exc:
                # A reply error leaves the session usable (aiosmtplib sent RSET); anything else may not.
                keep = isinstance(exc, (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused))
                self._checkin(conn, keep=keep and conn.smtp.is_connected)
                error = _classify(exc)
                if error is None:  # cancellation, or a bug: not an SMTP outcome
                    raise
                raise error from exc
            conn.sent += 1
            self._checkin(conn, keep=True)
        failed = {rcpt: (resp.code, resp.message) for rcpt, resp in refused.items()}
        accepted = tuple(r for r in recipients if r not in failed)
        return SendResult(accepted=accepted, reply=_reply(250, reply), refused=failed)

    async def close(self) -> None:
        """Quit idle connections; connections still sending are closed when they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(c) for c in idle), *self._quitting)

    async def _checkout(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()  # LIFO: the warmest connection; cold ones time out server-side
            if not conn.smtp.is_connected:
                conn.smtp.close()
                continue
            if time.monotonic() - conn.last_used < self._idle_check_after:
                return conn
            try:  # idle a while: the server may have hung up without us noticing
                await conn.smtp.noop()
                return conn
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                conn.smtp.close()
        return await self._connect()

    async def _connect(self) -> _Connection:
        cfg = self.config
        smtp = aiosmtplib.SMTP(
            hostname=cfg.host, port=cfg.port, username=cfg.username, password=cfg.password,
            use_tls=cfg.use_tls, start_tls=cfg.start_tls, tls_context=self._tls,
            timeout=cfg.timeout, local_hostname=self._local_hostname,
        )
        try:
            await smtp.connect()
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()
        except BaseException as exc:
            smtp.close()
            error = _classify(exc)
            if error is None:  # cancellation, or a bug: not an SMTP outcome
                raise
            if isinstance(error, PermanentSmtpError):  # a 5xx greeting/EHLO: still not the recipient's fault
                error = TransientSmtpError(f"cannot connect: {error.reply}", error.code)
            raise error from exc
        return _Connection(smtp)

    def _checkin(self, conn: _Connection, *, keep: bool) -> None:
        conn.last_used = time.monotonic()
        if keep and not self._closed and conn.smtp.is_connected and conn.sent < self._max_messages:
            self._idle.append(conn)
        elif keep and conn.smtp.is_connected:  # retired after max messages: say goodbye politely
            task = asyncio.ensure_future(self._quit(conn))
            self._quitting.add(task)
            task.add_done_callback(self._quitting.discard)
        else:
            conn.smtp.close()

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
    per process (re-created after a fork), batches sent concurrently, transient errors retried."""

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
        """Send all items concurrently; one outcome per item, in order (errors returned, not raised)."""
        if not items:
            return []
        loop, pool = self._started()
        future = asyncio.run_coroutine_threadsafe(self._send_batch(pool, items), loop)
        return future.result()

    def send(self, envelope_from: str, recipients: Sequence[str], message: bytes) -> SendResult:
        """Send one message; raises TransientSmtpError (after retries) or PermanentSmtpError."""
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
        for attempt, delay in enumerate((*self.retry_delays, None), start=1):
            try:
                result = await pool.send(item.envelope_from, item.recipients, item.message)
            except TransientSmtpError:
                if delay is None:
                    raise
                await asyncio.sleep(delay)
            else:
                return result if attempt == 1 else SendResult(
                    result.accepted, result.reply, result.refused, attempts=attempt)
        raise AssertionError("unreachable")

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
