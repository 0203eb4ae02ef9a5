"""The mail transactions of one SMTP session, pipelined (RFC 2920) when the server offers it.

aiosmtplib opens the session (connect, STARTTLS or TLS, EHLO, AUTH); ``MailChannel`` then takes
over its transport for the mail transactions, RSET, NOOP and QUIT. Why not aiosmtplib's own
``sendmail``: its protocol holds one reply waiter, so it cannot pipeline, and each of a message's
four round trips (MAIL, RCPT, DATA, the content) costs a lock, an ``asyncio.wait_for`` and a wake
of the event loop; it also rewrites every message's line endings with a regular expression.
Measured against Postfix's smtp-sink over 10 connections, 20,000 messages, one process: 0.49-0.64
ms of client CPU a message for ``sendmail``, 0.12-0.14 ms here (``benchmarks/smtp_client.py``).

With PIPELINING a message costs two round trips: MAIL, every RCPT and DATA in one write, then the
content; and the connection may be lent to the next message as soon as the content is queued
(``lend=True``): its MAIL, RCPT and DATA then go out in the same write as the content before it
(RFC 2920 allows commands after the end of the data), so a connection sending one message after
another costs one write and one round trip a message. Replies are paired with what asked for them
in the order they were asked. A 421 (the server is closing) ends the connection at once: nothing
asked after it is answered, and no content goes out after it. Without PIPELINING the commands go
one at a time, stopping at the first refusal, as ``sendmail`` does. The outcomes are aiosmtplib's:
the same replies and the same exceptions (``SMTPSenderRefused``, ``SMTPRecipientsRefused``,
``SMTPDataError``, ``SMTPServerDisconnected``, ``SMTPReadTimeoutError``), so ``smtp_outcomes``
classifies them unchanged.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Awaitable, Callable

import aiosmtplib
from aiosmtplib.protocol import normalize_message_line_endings

# What may never stand in an envelope address on a command line: controls, space, DEL, < and >.
_UNSAFE_MAILBOX = re.compile("[\x00-\x20\x7f<>]")
_UNSAFE_OPTION = re.compile("[\x00-\x20\x7f]")
# A line that starts with a dot: the regular expression finds it in a third of the time of ``in``.
_DOT_LINE = re.compile(rb"\n\.")
_MAX_REPLY = 32 * 1024  # a reply's lines together; bounds memory when a server sends no end
_OK = (aiosmtplib.SMTPStatus.completed, aiosmtplib.SMTPStatus.will_forward)
_START_INPUT = aiosmtplib.SMTPStatus.start_input
_CLOSING = aiosmtplib.SMTPStatus.domain_unavailable  # 421


class _Asked:
    """Replies asked for by one write, and the future resolved once they are all in."""

    __slots__ = ("wanted", "replies", "future", "deadline")

    def __init__(self, wanted: int, future: asyncio.Future[None], deadline: float) -> None:
        self.wanted, self.future, self.deadline = wanted, future, deadline
        self.replies: list[aiosmtplib.SMTPResponse] = []


class MailChannel(asyncio.Protocol):
    """One open, greeted (and logged in) session's mail transactions. Use from its event loop,
    one transaction at a time, except that a transaction started with ``lend`` lets the next one
    start while its final reply is still to come (the pool lends a connection to one send at a
    time, and to the next once the content is queued)."""

    def __init__(self, smtp: aiosmtplib.SMTP, *, timeout: float | None) -> None:
        """Take over ``smtp``'s transport: from here on only this object talks to the server."""
        if smtp.transport is None or not smtp.is_connected:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        self._smtp = smtp
        self._transport: asyncio.Transport = smtp.transport
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._buffer = bytearray()
        self._asked: deque[_Asked] = deque()  # in the order asked: replies come in that order
        self._held: list[bytes] = []  # content not written yet: the next message's commands join it
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
        RSET for a refused step. ``message`` may have any line endings (made CRLF; see ``start``'s ``crlf``).

        ``before_content()``, when given, is awaited once the server is ready for the content (its
        354), just before the content goes out: from there on the message may be accepted. If it
        raises, the content is not sent and the connection is closed (mid-DATA: nothing delivered)."""
        refused, final = await self.start(sender, recipients, message, options, before_content)
        return refused, await final

    async def start(self, sender: str, recipients: list[str], message: bytes, options: list[str],
                    before_content: Callable[[], Awaitable[None]] | None = None, *, lend: bool = False,
                    crlf: bool = False) -> tuple[dict[str, aiosmtplib.SMTPResponse], Awaitable[str]]:
        """``transact`` up to the content queued: returns the refused recipients and an awaitable
        of the final reply's text (raising as ``transact`` does). With ``lend`` (only with
        PIPELINING) the channel takes the next transaction at once, while this one's final reply is
        still to come: the content is held for a moment, so that the next message's commands go in
        the same write, and a refused content is not followed by an RSET (the end of the data ends
        the transaction either way, RFC 5321 4.1.1.4, and the next one may already be under way).
        ``crlf``: the caller vouches that every line of ``message`` ends in CRLF (as built by
        ``renderers.mime``), which saves scanning it for other line ends: ~5 us of a 3 KB message."""
        if lend and not self.pipelining:
            raise ValueError("a channel is lent to the next message only with PIPELINING")
        mailboxes = [sender, *recipients]
        if any(_UNSAFE_MAILBOX.search(m) or m.count("@") != 1 for m in mailboxes):
            raise ValueError("an envelope address must be one bare local@domain address")
        if any(_UNSAFE_OPTION.search(o) for o in options):
            raise ValueError("a MAIL FROM option contains a space or control character")
        utf8 = "SMTPUTF8" in options
        if utf8 and not self._smtputf8:
            raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
        encoding = "utf-8" if utf8 else "ascii"
        if not crlf and (message.count(b"\n") != message.count(b"\r\n") or message.count(b"\r") != message.count(b"\n")
                         or not message.endswith(b"\r\n")):
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
            raise _disconnected()
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
            error = _disconnected()
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
        leading_dot = message.startswith(b".")
        if leading_dot or _DOT_LINE.search(message):  # dot-stuffing (RFC 5321 4.5.2)
            message = (b"." if leading_dot else b"") + message.replace(b"\r\n.", b"\r\n..")
        asked = self._ask(1)
        if lend:
            self._hold(message + b".\r\n")
        else:
            self._transport.write(message + b".\r\n")
        return refused, self._final(asked, lend)

    async def _final(self, asked: _Asked, lent: bool) -> str:
        (reply,) = await self._replies_to(asked)
        if reply.code not in _OK:
            if not lent:
                await self._after_refusal([reply], None)
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        return reply.message

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
        asked = self._ask(replies)
        if self._held:  # the content before it is held: one write for both
            self._held.append(data)
        else:
            self._transport.write(data)
        return await self._replies_to(asked)

    def _ask(self, replies: int) -> _Asked:
        """Expect ``replies`` more replies, after those asked before."""
        if self._transport.is_closing():
            raise _disconnected()
        if not self._asked:
            self._buffer.clear()  # what came unasked since the last replies must not pair with these
        deadline = self._loop.time() + self._timeout if self._timeout is not None else 0.0
        asked = _Asked(replies, self._loop.create_future(), deadline)
        self._asked.append(asked)
        return asked

    async def _replies_to(self, asked: _Asked) -> list[aiosmtplib.SMTPResponse]:
        await asked.future
        return asked.replies

    def _hold(self, data: bytes) -> None:
        """Write ``data`` two loop iterations from now, with whatever is written meanwhile: long
        enough for the send that gets this connection next (woken by its release) to add its
        commands."""
        self._held.append(data)
        self._loop.call_soon(self._loop.call_soon, self._flush)

    def _flush(self) -> None:
        held, self._held = self._held, []
        if held and not self._transport.is_closing():
            self._transport.write(b"".join(held))

    def _watch(self) -> None:
        """Fail the exchanges whose replies are overdue (closing: a late reply would be taken for
        the next command's); runs until the connection is closed."""
        if self._asked and self._loop.time() >= self._asked[0].deadline:
            self._fail(lambda: aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response"))
            self.close()
        if not self._transport.is_closing():
            self._loop.call_later(self._every, self._watch)

    def _answered(self) -> None:
        """The oldest exchange has its replies (all, or all there will be): it is over."""
        asked = self._asked.popleft()
        if not asked.future.done():  # a cancelled exchange's replies are still its own
            asked.future.set_result(None)

    def _fail(self, error: Callable[[], Exception]) -> None:
        """Everything still asked fails with a fresh ``error()`` each (raised in several tasks)."""
        asked, self._asked = self._asked, deque()
        for item in asked:
            if not item.future.done():
                item.future.set_exception(error())

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self._asked:  # nothing asked: unsolicited, dropped as aiosmtplib does
            self._buffer.clear()
            return
        buffer = self._buffer
        buffer += data
        while self._asked:
            reply, used = _parse_reply(buffer)
            if reply is None:
                if len(buffer) > _MAX_REPLY:
                    buffer.clear()
                    self._fail(lambda: aiosmtplib.SMTPResponseException(
                        aiosmtplib.SMTPStatus.invalid_response, "Response too long"))
                elif used < 0:
                    buffer.clear()
                    self._fail(lambda: aiosmtplib.SMTPResponseException(
                        aiosmtplib.SMTPStatus.invalid_response, "Malformed SMTP response"))
                return
            del buffer[:used]
            asked = self._asked[0]
            asked.replies.append(reply)
            if reply.code == _CLOSING:
                # The server is closing: what it says after this is not to be trusted (a 354 to a
                # command written before the 421 was read would take content nobody will see
                # acknowledged). This exchange ends with what it has; all later ones are lost.
                self._answered()
                self._fail(_disconnected)
                self._held.clear()
                self.close()
                return
            if len(asked.replies) == asked.wanted:
                self._answered()

    def eof_received(self) -> bool:
        self._lost()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    def _lost(self, exc: Exception | None = None) -> None:
        self._held.clear()
        if self._asked and self._asked[0].replies:  # what the server said before it went away
            self._answered()

        def error() -> Exception:
            lost = _disconnected()
            lost.__cause__ = exc
            return lost

        self._fail(error)


def _disconnected() -> Exception:
    return aiosmtplib.SMTPServerDisconnected("Connection lost")


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
