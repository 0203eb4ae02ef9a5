"""The mail transactions of one SMTP session, pipelined (RFC 2920) when the server offers it.

aiosmtplib opens the session (connect, STARTTLS or TLS, EHLO, AUTH); ``MailChannel`` then takes
over its transport for the mail transactions, RSET, NOOP and QUIT. Why not aiosmtplib's own
``sendmail``: its protocol holds one reply waiter, so it cannot pipeline, and each of a message's
four round trips (MAIL, RCPT, DATA, the content) costs a lock, an ``asyncio.wait_for`` and a wake
of the event loop; it also rewrites every message's line endings with a regular expression.
Measured against Postfix's smtp-sink over 10 connections, 20,000 messages, one process: 0.49-0.64
ms of client CPU a message for ``sendmail``, 0.12-0.14 ms here (``benchmarks/smtp_client.py``).

With PIPELINING a message costs two round trips: MAIL, every RCPT and DATA in one write, then the
content. Without it the commands go one at a time, stopping at the first refusal, as ``sendmail``
does. The outcomes are aiosmtplib's: the same replies and the same exceptions
(``SMTPSenderRefused``, ``SMTPRecipientsRefused``, ``SMTPDataError``, ``SMTPServerDisconnected``,
``SMTPReadTimeoutError``), so ``smtp_outcomes`` classifies them unchanged.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import aiosmtplib
from aiosmtplib.protocol import normalize_message_line_endings

# What may never stand in an envelope address on a command line: controls, space, DEL, < and >.
_UNSAFE_MAILBOX = re.compile("[\x00-\x20\x7f<>]")
_UNSAFE_OPTION = re.compile("[\x00-\x20\x7f]")
_MAX_REPLY = 32 * 1024  # a reply's lines together; bounds memory when a server sends no end
_OK = (aiosmtplib.SMTPStatus.completed, aiosmtplib.SMTPStatus.will_forward)
_START_INPUT = aiosmtplib.SMTPStatus.start_input
_CLOSING = aiosmtplib.SMTPStatus.domain_unavailable  # 421


class MailChannel(asyncio.Protocol):
    """One open, greeted (and logged in) session's mail transactions. Use from its event loop,
    one call at a time (the pool lends a connection to one send at a time)."""

    def __init__(self, smtp: aiosmtplib.SMTP, *, timeout: float | None) -> None:
        """Take over ``smtp``'s transport: from here on only this object talks to the server."""
        if smtp.transport is None or not smtp.is_connected:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        self._smtp = smtp
        self._transport: asyncio.Transport = smtp.transport
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._deadline = 0.0  # when the reply being waited for is late (loop time)
        self._buffer = bytearray()
        self._replies: list[aiosmtplib.SMTPResponse] = []
        self._wanted = 0
        self._waiter: asyncio.Future[None] | None = None
        self.pipelining = smtp.supports_extension("pipelining")
        self._size = smtp.supports_extension("size")
        self._smtputf8 = smtp.supports_extension("smtputf8")
        # After a refused step the transaction is reset with RSET; when that fails too the
        # session's state is unknown and the pool does not reuse it.
        self.rset_failed = False
        self._transport.set_protocol(self)
        if timeout is not None:
            # One watchdog a connection, every quarter of the timeout (at most every second),
            # instead of a timer per round trip: those were ~6% of the client's CPU.
            self._every = min(timeout / 4, 1.0)
            self._loop.call_later(self._every, self._watch)

    # -- the session --------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return not self._transport.is_closing()

    def supports_extension(self, extension: str) -> bool:
        return self._smtp.supports_extension(extension)

    def close(self) -> None:
        """Drop the connection without a word (what aiosmtplib's ``close`` does)."""
        self._smtp.close()

    async def noop(self) -> aiosmtplib.SMTPResponse:
        """NOOP; raises SMTPResponseException unless answered 250 (a 421 also closes)."""
        return await self._simple(b"NOOP\r\n")

    async def rset(self) -> aiosmtplib.SMTPResponse:
        """RSET; raises as ``noop``, and remembers a failure in ``rset_failed``."""
        try:
            return await self._simple(b"RSET\r\n")
        except BaseException:
            self.rset_failed = True
            raise

    async def quit(self) -> None:
        """QUIT, its reply awaited (whatever it is), then the connection closed."""
        try:
            await self._exchange(b"QUIT\r\n", 1)
        finally:
            self.close()

    # -- a mail transaction -------------------------------------------------------------------

    async def transact(self, sender: str, recipients: list[str], message: bytes, options: list[str],
                       before_content: Callable[[], Awaitable[None]] | None = None,
                       ) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
        """Send ``message`` from ``sender`` to ``recipients`` (bare addresses; ``options`` such as
        ``SMTPUTF8`` and ``BODY=8BITMIME`` go on MAIL FROM). Returns the refused recipients with
        their replies and the final reply's text, as ``sendmail`` does; raises as it does, after an
        RSET for a refused step. ``message`` may have any line endings; CRLF ones cost nothing.

        ``before_content()``, when given, is awaited once the server is ready for the content (its
        354), just before the content goes out: from there on the message may be accepted. If it
        raises, the content is not sent and the connection is closed (mid-DATA: nothing delivered)."""
        mailboxes = [sender, *recipients]
        if any(_UNSAFE_MAILBOX.search(m) or m.count("@") != 1 for m in mailboxes):
            raise ValueError("an envelope address must be one bare local@domain address")
        if any(_UNSAFE_OPTION.search(o) for o in options):
            raise ValueError("a MAIL FROM option contains a space or control character")
        utf8 = "SMTPUTF8" in options
        if utf8 and not self._smtputf8:
            raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
        encoding = "utf-8" if utf8 else "ascii"
        if message.count(b"\n") != message.count(b"\r\n") or message.count(b"\r") != message.count(b"\n") \
                or not message.endswith(b"\r\n"):
            message = normalize_message_line_endings(message)
        if self._size:  # RFC 1870: octets as sent, CRLFs included
            options = [f"SIZE={len(message)}", *options]
        mail = b" ".join([b"MAIL FROM:<" + sender.encode(encoding) + b">", *(o.encode("ascii") for o in options)])
        commands = [mail + b"\r\n", *(b"RCPT TO:<" + r.encode(encoding) + b">\r\n" for r in recipients),
                    b"DATA\r\n"]
        if self.pipelining:
            replies = await self._exchange(b"".join(commands), len(commands))
        else:
            replies = []
            for command in commands:
                replies.extend(await self._exchange(command, 1))
                if replies[-1].code == _CLOSING or (len(replies) == 1 and replies[0].code not in _OK) \
                        or (len(replies) == len(commands) - 1 and all(r.code not in _OK for r in replies[1:])):
                    break  # as sendmail: no RCPT after a refused MAIL, no DATA when every RCPT was refused
        if len(replies) < len(commands) and not any(r.code == _CLOSING for r in replies) \
                and all(r.code in _OK for r in replies):
            self.close()  # the server went away mid-way (_exchange returned what it had)
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        refused = {rcpt: reply for rcpt, reply in zip(recipients, replies[1:]) if reply.code not in _OK}
        data = replies[-1] if len(replies) == len(commands) else None
        closing = next((r for r in replies if r.code == _CLOSING), None)
        error: Exception | None = None
        if replies[0].code not in _OK:
            error = aiosmtplib.SMTPSenderRefused(replies[0].code, replies[0].message, sender)
        elif len(refused) == len(recipients):
            error = aiosmtplib.SMTPRecipientsRefused([
                aiosmtplib.SMTPRecipientRefused(r.code, r.message, rcpt) for rcpt, r in refused.items()])
        elif closing is not None:  # the server is closing: transient, whatever it said after
            error = aiosmtplib.SMTPResponseException(closing.code, closing.message)
        elif data is None:
            error = aiosmtplib.SMTPServerDisconnected("Connection lost")
        elif data.code != _START_INPUT:
            error = aiosmtplib.SMTPDataError(data.code, data.message)
        if error is not None:
            await self._after_refusal(replies, data)
            raise error
        if before_content is not None:
            try:
                await before_content()
            except BaseException:
                self.close()
                raise
        if b"\n." in message or message.startswith(b"."):  # dot-stuffing (RFC 5321 4.5.2)
            message = (b"." if message.startswith(b".") else b"") + message.replace(b"\r\n.", b"\r\n..")
        (reply,) = await self._exchange(message + b".\r\n", 1)
        if reply.code not in _OK:
            await self._after_refusal([reply], None)
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        return refused, reply.message

    async def _after_refusal(self, replies: list[aiosmtplib.SMTPResponse],
                             data: aiosmtplib.SMTPResponse | None) -> None:
        """Reset the envelope for the next message after a refused step, as ``sendmail`` does; or
        close, when the server announced its close (421) or is waiting for a message's content
        (a 354 to DATA in a refused transaction: closing mid-content delivers nothing)."""
        if any(r.code == _CLOSING for r in replies) or (data is not None and data.code == _START_INPUT):
            self.close()
            return
        try:
            await self.rset()
        except (ConnectionError, aiosmtplib.SMTPException, asyncio.TimeoutError):
            pass

    # -- replies ------------------------------------------------------------------------------

    async def _simple(self, command: bytes) -> aiosmtplib.SMTPResponse:
        (reply,) = await self._exchange(command, 1)
        if reply.code == _CLOSING:
            self.close()
        if reply.code != aiosmtplib.SMTPStatus.completed:
            raise aiosmtplib.SMTPResponseException(reply.code, reply.message)
        return reply

    async def _exchange(self, data: bytes, replies: int) -> list[aiosmtplib.SMTPResponse]:
        """Write ``data`` and wait for ``replies`` replies. Raises SMTPServerDisconnected when the
        connection is gone before the first reply, SMTPReadTimeoutError (closing the connection:
        a late reply would be taken for the next command's) after ``timeout`` without them all.
        When the server closes after some replies, returns those."""
        if self._transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        waiter = self._waiter = self._loop.create_future()
        self._buffer.clear()  # what came unasked since the last replies must not pair with these
        self._replies, self._wanted = [], replies
        self._transport.write(data)
        if self._timeout is not None:
            self._deadline = self._loop.time() + self._timeout
        try:
            await waiter
        finally:
            self._waiter, self._wanted = None, 0
        return self._replies

    def _watch(self) -> None:
        """Fail the exchange whose replies are overdue (closing: a late reply would be taken for
        the next command's); runs until the connection is closed."""
        waiter = self._waiter
        if waiter is not None and not waiter.done() and self._loop.time() >= self._deadline:
            waiter.set_exception(aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response"))
            self.close()
        if not self._transport.is_closing():
            self._loop.call_later(self._every, self._watch)

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():  # nothing asked: unsolicited, dropped as aiosmtplib does
            self._buffer.clear()
            return
        buffer = self._buffer
        buffer += data
        while len(self._replies) < self._wanted:
            reply, used = _parse_reply(buffer)
            if reply is None:
                if len(buffer) > _MAX_REPLY:
                    buffer.clear()
                    waiter.set_exception(aiosmtplib.SMTPResponseException(
                        aiosmtplib.SMTPStatus.invalid_response, "Response too long"))
                elif used < 0:
                    buffer.clear()
                    waiter.set_exception(aiosmtplib.SMTPResponseException(
                        aiosmtplib.SMTPStatus.invalid_response, "Malformed SMTP response"))
                return
            del buffer[:used]
            self._replies.append(reply)
        waiter.set_result(None)

    def eof_received(self) -> bool:
        self._lost()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    def _lost(self, exc: Exception | None = None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._replies:  # what the server said before it went away
                waiter.set_result(None)
            else:
                error = aiosmtplib.SMTPServerDisconnected("Connection lost")
                error.__cause__ = exc
                waiter.set_exception(error)


def _parse_reply(buffer: bytearray) -> tuple[aiosmtplib.SMTPResponse | None, int]:
    """The first whole reply in ``buffer`` and the bytes it took; ``(None, 0)`` when it is not all
    there yet, ``(None, -1)`` when it is not an SMTP reply."""
    offset, lines = 0, []
    while True:
        end = buffer.find(b"\n", offset)
        if end < 0:
            return None, 0
        line = bytes(buffer[offset:end + 1])
        offset = end + 1
        if not line[:3].isdigit():
            return None, -1
        lines.append(line[4:].strip(b" \t\r\n"))
        if line[3:4] != b"-":
            text = b"\n".join(lines).decode("utf-8", "surrogateescape")
            return aiosmtplib.SMTPResponse(int(line[:3]), text), offset
