"""The mail transaction on the wire (worker.channels.smtp_channel): pipelined when the relay offers
PIPELINING, one command at a time otherwise, and what happens when a step is refused, a reply
comes in pieces, the content holds lines that start with a dot, or the relay stops answering."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable

import pytest

from tests.smtpserver import RawSmtpServer, SmtpTestServer
from worker.channels.smtp import (
    OutgoingMail,
    PermanentSmtpError,
    SendResult,
    SmtpConfig,
    SmtpPool,
    SmtpSender,
    TransientSmtpError,
)


def message(n: int | str, body: str = "Hello") -> bytes:
    return (f"From: news@acme.example\r\nTo: r{n}@example.com\r\nSubject: Issue {n}\r\n"
            f"Message-ID: <issue-{n}@acme.example>\r\n\r\n{body}\r\n").encode()


def send_each(url: str, *numbers: int) -> list[object]:
    """Send one message per number, in turn, over a pool of one connection; outcomes in order."""
    async def go() -> list[object]:
        pool = SmtpPool(SmtpConfig.from_url(url), size=1)
        outcomes: list[object] = []
        try:
            for n in numbers:
                try:
                    outcomes.append(await pool.send("b@acme.example", [f"r{n}@example.com"], message(n)))
                except (TransientSmtpError, PermanentSmtpError) as exc:
                    outcomes.append(exc)
        finally:
            await pool.close()
        return outcomes

    return asyncio.run(go())


class ScriptedRelay:
    """A TCP listener whose one session is the test's own function over the socket (in a thread):
    for what only bytes on the wire show (what arrived before any reply was sent, replies split
    across writes, no reply at all)."""

    def __init__(self, session: Callable[[socket.socket], None]) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"smtp://127.0.0.1:{self._listener.getsockname()[1]}"
        self.error: BaseException | None = None
        self._session = session
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        conn.settimeout(5)
        try:
            self._session(conn)
        except BaseException as exc:  # noqa: BLE001 - reported by the test through .error
            self.error = exc
        finally:
            conn.close()

    def __enter__(self) -> ScriptedRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._thread.join(timeout=10)
        self._listener.close()


def read_until(conn: socket.socket, marker: bytes, seen: bytearray) -> bytes:
    """Read into ``seen`` until it holds ``marker``; returns (and removes) what came up to its end."""
    while marker not in seen:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before {marker!r}; got {bytes(seen)!r}")
        seen += chunk
    end = seen.index(marker) + len(marker)
    got = bytes(seen[:end])
    del seen[:end]
    return got


def greet(conn: socket.socket, seen: bytearray, extensions: list[str]) -> None:
    conn.sendall(b"220 scripted.test ESMTP\r\n")
    read_until(conn, b"\r\n", seen)  # EHLO
    lines = ["scripted.test", *extensions]
    conn.sendall("".join(f"250{'-' if i < len(lines) - 1 else ' '}{line}\r\n"
                         for i, line in enumerate(lines)).encode())


def test_with_pipelining_mail_rcpt_and_data_arrive_before_any_reply_and_replies_may_come_in_pieces():
    before_reply: list[bytes] = []

    def session(conn: socket.socket) -> None:
        seen = bytearray()
        greet(conn, seen, ["PIPELINING", "8BITMIME"])
        # Nothing is answered until DATA has arrived: a client waiting for MAIL's reply would
        # never send it, and this read would time out.
        before_reply.append(read_until(conn, b"DATA\r\n", seen))
        conn.sendall(b"250 2.1.0 Ok\r\n250 2.1")  # a reply split across two writes
        conn.sendall(b".5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n")
        read_until(conn, b"\r\n.\r\n", seen)
        conn.sendall(b"250-2.0.0 Ok\r\n250 2.0.0 queued as 4Xyz\r\n")  # a reply of two lines
        read_until(conn, b"QUIT\r\n", seen)
        conn.sendall(b"221 Bye\r\n")

    with ScriptedRelay(session) as relay:
        (outcome,) = send_each(relay.url, 1)
    assert relay.error is None, relay.error
    assert isinstance(outcome, SendResult) and outcome.accepted == ("r1@example.com",)
    assert outcome.reply == "250 2.0.0 Ok\n2.0.0 queued as 4Xyz"
    assert before_reply == [b"MAIL FROM:<b@acme.example>\r\nRCPT TO:<r1@example.com>\r\nDATA\r\n"]


def test_without_pipelining_nothing_follows_a_refused_mail_from_and_the_connection_is_kept():
    with RawSmtpServer(pipelining=False) as server:
        server.reply("MAIL", "550 5.7.1 sender refused")
        first, second = send_each(server.url, 1, 2)
    assert isinstance(first, PermanentSmtpError) and first.code == 550
    assert isinstance(second, SendResult)
    assert server.commands[:5] == ["GREETING", "EHLO", "MAIL", "RSET", "MAIL"]
    assert server.connections == 1
    assert [m.rcpt_tos for m in server.messages] == [("r2@example.com",)]


def test_with_pipelining_a_refused_mail_from_is_reset_and_the_connection_kept():
    with RawSmtpServer() as server:
        server.reply("MAIL", "550 5.7.1 sender refused")
        first, second = send_each(server.url, 1, 2)
    assert isinstance(first, PermanentSmtpError) and first.code == 550
    assert str(first) == "550 5.7.1 sender refused"
    assert isinstance(second, SendResult)
    # RCPT and DATA were on the wire already; the relay refused them (503, 554), then RSET.
    assert server.commands[:6] == ["GREETING", "EHLO", "MAIL", "RCPT", "DATA", "RSET"]
    assert server.connections == 1
    assert [m.rcpt_tos for m in server.messages] == [("r2@example.com",)]


def test_a_relay_that_says_354_after_refusing_the_recipient_gets_no_content_and_the_connection_is_dropped():
    # RFC 2920 asks the client to look at the reply to DATA even when every RCPT was refused. A
    # relay waiting for content after refusing the recipient gets none: the connection is closed
    # mid-DATA, which delivers nothing, and the next message goes over a new one.
    with RawSmtpServer() as server:
        server.reply("RCPT", "550 5.1.1 no such user")
        server.reply("DATA", "354 go ahead")
        first, second = send_each(server.url, 1, 2)
    assert isinstance(first, PermanentSmtpError) and first.code == 550
    assert isinstance(second, SendResult)
    assert server.connections == 2
    assert [m.rcpt_tos for m in server.messages] == [("r2@example.com",)]


@pytest.mark.parametrize("crlf", [False, True], ids=["line-ends-scanned", "line-ends-vouched-for"])
@pytest.mark.parametrize("pipelining", [False, True], ids=["one-command-at-a-time", "pipelining"])
def test_lines_starting_with_a_dot_arrive_unchanged(pipelining, crlf):
    body = ".\r\n..two dots\r\n.leading dot\r\nend."
    with SmtpTestServer(pipelining=pipelining) as server, \
            SmtpSender(SmtpConfig.from_url(server.url), retry_delays=()) as sender:
        (outcome,) = sender.send_many([OutgoingMail("b@acme.example", ["r1@example.com"], message(1, body), crlf=crlf)])
    assert isinstance(outcome, SendResult)
    assert [m.data for m in server.messages] == [message(1, body)]


def test_a_relay_that_stops_answering_is_a_transient_error_after_the_timeout_and_the_connection_is_closed():
    def session(conn: socket.socket) -> None:
        seen = bytearray()
        greet(conn, seen, ["PIPELINING"])
        read_until(conn, b"DATA\r\n", seen)
        conn.sendall(b"250 Ok\r\n250 Ok\r\n354 go\r\n")
        read_until(conn, b"\r\n.\r\n", seen)
        # no reply to the content; the client gives up and closes
        assert conn.recv(100) == b""

    with ScriptedRelay(session) as relay:
        with SmtpSender(SmtpConfig.from_url(relay.url + "?timeout=0.3"), retry_delays=()) as sender:
            (outcome,) = sender.send_many([OutgoingMail("b@acme.example", ["r1@example.com"], message(1))])
    assert relay.error is None, relay.error
    assert isinstance(outcome, TransientSmtpError)
    assert "Timed out" in str(outcome)


# -- one message after another on one connection (PIPELINING) --------------------------------------

def send_together(url: str, *numbers: int, retry_delays: tuple[float, ...] = ()) -> list[object]:
    """Send one message per number, all at once, over a pool of one connection (as a worker's round
    does): each message after the first waits for the connection. Outcomes in order."""
    with SmtpSender(SmtpConfig.from_url(url), pool_size=1, retry_delays=retry_delays) as sender:
        return sender.send_many([OutgoingMail("b@acme.example", [f"r{n}@example.com"], message(n))
                                 for n in numbers])


def test_with_pipelining_the_next_message_s_commands_go_with_the_content_before_its_reply():
    together: list[bytes] = []

    def session(conn: socket.socket) -> None:
        seen = bytearray()
        greet(conn, seen, ["PIPELINING"])
        read_until(conn, b"DATA\r\n", seen)
        conn.sendall(b"250 Ok\r\n250 Ok\r\n354 go\r\n")
        # The first message's content is not answered until the second message's commands have
        # come: a client waiting for that reply first would never send them, and this read would
        # time out.
        together.append(read_until(conn, b"DATA\r\n", seen))
        conn.sendall(b"250 queued as 1\r\n250 Ok\r\n250 Ok\r\n354 go\r\n")
        read_until(conn, b"\r\n.\r\n", seen)
        conn.sendall(b"250 queued as 2\r\n")
        read_until(conn, b"QUIT\r\n", seen)
        conn.sendall(b"221 Bye\r\n")

    with ScriptedRelay(session) as relay:
        first, second = send_together(relay.url, 1, 2)
    assert relay.error is None, relay.error
    assert isinstance(first, SendResult) and first.reply == "250 queued as 1"
    assert isinstance(second, SendResult) and second.reply == "250 queued as 2"
    assert together == [message(1) + b".\r\nMAIL FROM:<b@acme.example>\r\nRCPT TO:<r2@example.com>\r\nDATA\r\n"]


def test_a_421_to_the_content_stops_the_next_message_s_content_though_the_relay_said_354():
    # The relay closes after its 421 but, as some do for a few ms, answers what was already on
    # the wire: 250, 250 and 354 to the next message's commands. That content would be taken
    # with nobody seeing its reply (a duplicate when retried): it never goes out. Both messages
    # go again over a new connection, once each.
    with RawSmtpServer(close_after=0.5) as server:
        server.reply("END", "421 4.3.2 Service shutting down")
        outcomes = send_together(server.url, 1, 2, 3, retry_delays=(0.05, 0.05))
    assert all(isinstance(o, SendResult) for o in outcomes), outcomes
    assert sorted(m.rcpt_tos for m in server.messages) == [(f"r{n}@example.com",) for n in (1, 2, 3)]
    first_connection = server.commands[:server.commands.index("GREETING", 1)]
    assert first_connection == ["GREETING", "EHLO", "MAIL", "RCPT", "DATA", "END", "MAIL", "RCPT", "DATA"]


def test_a_refused_content_leaves_the_connection_to_the_next_message_without_a_reset():
    with RawSmtpServer() as server:
        server.reply("END", "554 5.7.1 message refused")
        first, second = send_together(server.url, 1, 2)
    assert isinstance(first, PermanentSmtpError) and first.code == 554
    assert isinstance(second, SendResult)
    assert server.connections == 1
    assert "RSET" not in server.commands
    assert [m.rcpt_tos for m in server.messages] == [("r2@example.com",)]
