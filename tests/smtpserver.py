"""A real SMTP server (aiosmtpd) for tests: records what it accepts, counts connections, and
answers scripted recipients with chosen replies or a dropped connection.

    with SmtpTestServer() as server:
        server.script("bob@example.com", "421 try later", times=2)
        ... send to server.url ...
        assert server.delivered_to("bob@example.com")

or use the `smtp_server` fixture (import it into the test module).

Relays at fault: ClosingRelay (421 to the end of DATA, then a close), RawSmtpServer (any reply to
any command, greeting included), HangUpListener (closes before the greeting), free_port().
"""

from __future__ import annotations

import asyncio
import socket
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from worker.channels.mailcatcher import BoundController

DROP = "<drop the connection>"
"""Script action: close the client's connection instead of replying."""


@dataclass(frozen=True)
class Received:
    """One message the server accepted: its envelope and its bytes, as received."""

    envelope_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


@dataclass
class _Step:
    action: str
    times: int | None  # None: for ever


class _CountingController(BoundController):
    def __init__(self, owner: SmtpTestServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner

    def factory(self) -> SMTP:
        with self._owner._lock:  # one SMTP instance per accepted connection
            self._owner.connections += 1
        with warnings.catch_warnings():  # AUTH without TLS is what a local test server wants
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning)
            return super().factory()


class SmtpTestServer:
    """aiosmtpd on 127.0.0.1, a free port, in this process. Optional AUTH with `credentials`."""

    def __init__(self, credentials: tuple[str, str] | None = None, host: str = "127.0.0.1",
                 size_limit: int | None = None, pipelining: bool = False) -> None:
        self.host, self.port = host, 0
        self.credentials = credentials
        self.pipelining = pipelining  # offer PIPELINING (aiosmtpd does not, but reads commands in turn)
        self.size_limit = size_limit  # advertised as SIZE; a larger MAIL ... SIZE= is refused with 552
        self.messages: list[Received] = []
        self.connections = 0
        self.envelopes_begun = 0  # MAIL FROM commands accepted
        self.logins: list[tuple[str, str]] = []
        self._scripts: dict[tuple[str, str], list[_Step]] = {}
        self._lock = threading.Lock()
        self._controller: _CountingController | None = None

    # -- scripting -----------------------------------------------------------------------------

    def script(self, recipient: str, action: str, times: int | None = 1,
               stage: Literal["rcpt", "data"] = "rcpt") -> None:
        """Answer `recipient` with `action` (a reply like "550 no such user", or DROP) the next
        `times` times (None: always), at RCPT TO or after DATA. Steps queue up in order."""
        with self._lock:
            self._scripts.setdefault((stage, recipient.lower()), []).append(_Step(action, times))

    def _next_action(self, stage: str, recipient: str) -> str | None:
        with self._lock:
            steps = self._scripts.get((stage, recipient.lower()))
            if not steps:
                return None
            step = steps[0]
            if step.times is not None:
                step.times -= 1
                if step.times <= 0:
                    steps.pop(0)
            return step.action

    # -- what was received ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """`smtp://user:pass@host:port` (with the credentials, if any)."""
        auth = f"{self.credentials[0]}:{self.credentials[1]}@" if self.credentials else ""
        return f"smtp://{auth}{self.host}:{self.port}"

    def delivered_to(self, recipient: str) -> list[Received]:
        """The messages accepted with `recipient` in their envelope."""
        with self._lock:
            return [m for m in self.messages if recipient in m.rcpt_tos]

    # -- aiosmtpd handler hooks ----------------------------------------------------------------

    async def handle_EHLO(self, server: SMTP, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        if self.pipelining:
            responses = [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_MAIL(self, server: SMTP, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        with self._lock:
            self.envelopes_begun += 1
        envelope.mail_from = address  # what aiosmtpd does itself when there is no hook
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        action = self._next_action("rcpt", address)
        if action == DROP:
            server.transport.close()
            return "421 closing"  # written to a closed transport: the client sees EOF
        if action is not None:
            return action
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        for rcpt in envelope.rcpt_tos:
            action = self._next_action("data", rcpt)
            if action == DROP:
                server.transport.close()
                return "421 closing"
            if action is not None:
                return action
        with self._lock:
            self.messages.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos),
                                          bytes(envelope.original_content)))
        return "250 OK queued"

    def _authenticate(self, server: SMTP, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = (auth_data.login.decode(), auth_data.password.decode())
        with self._lock:
            self.logins.append(login)
        # handled=False: aiosmtpd itself answers 235 or 535.
        return AuthResult(success=login == self.credentials, handled=False)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> SmtpTestServer:
        """Listen in a background thread: on a free port, or on the same port again after stop()."""
        options: dict[str, Any] = {}
        if self.size_limit is not None:
            options["data_size_limit"] = self.size_limit
        if self.credentials:
            options.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=False)
        self._controller = _CountingController(
            self, self, hostname=self.host, port=self.port, server_hostname="smtp.test", **options)
        self._controller.start()
        self.port = self._controller.port
        with self._lock:
            self.connections = 0  # forget the controller's own is-it-up connection
        return self

    def stop(self) -> None:
        """Stop listening and drop open connections."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpTestServer]:
    """A started SmtpTestServer without AUTH, stopped after the test."""
    with SmtpTestServer() as server:
        yield server


# -- servers that misbehave the way real relays do ---------------------------------------------

class ClosingRelay(SmtpTestServer):
    """A relay that answers `421` to the end of DATA for the first `refuse` messages of the run and
    closes that connection `close_after` seconds later (RFC 5321 3.8: 421 announces the close; the
    few milliseconds are the relay finishing its work). Every other message is accepted and recorded.

    Until the close the connection still works: a client that goes on sending over it can have a
    message queued whose 250 never arrives (the close drops the reply), so it retries a message
    that was delivered: a duplicate."""

    def __init__(self, refuse: int, close_after: float = 0.02) -> None:
        super().__init__()
        self.refuse, self.close_after = refuse, close_after
        self.refused = 0  # 421s answered so far

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        with self._lock:
            closing = self.refused < self.refuse
            self.refused += closing
        if closing:
            transport = server.transport
            server.loop.call_later(self.close_after, transport.close)
            return "421 4.3.2 Service shutting down, closing transmission channel"
        return await super().handle_DATA(server, session, envelope)


class RawSmtpServer:
    """A small SMTP server on asyncio streams for replies aiosmtpd cannot give: any reply to any
    command, the greeting and the DATA command included (`reply("DATA", "421 ...")`). A 421 reply
    closes the connection `close_after` seconds later, as RFC 5321 3.8 says, the session going on
    until then. Counts connections, records the commands and the messages it accepts.

    With `auth=True` it offers AUTH PLAIN LOGIN and refuses every login (535) unless told otherwise;
    it offers PIPELINING unless `pipelining=False`.
    """

    COMMANDS = ("GREETING", "EHLO", "HELO", "AUTH", "MAIL", "RCPT", "DATA", "END", "RSET", "NOOP")

    def __init__(self, *, auth: bool = False, close_after: float = 0.02, host: str = "127.0.0.1",
                 port: int = 0, pipelining: bool = True) -> None:
        self.host, self.port = host, port
        self.auth, self.close_after = auth, close_after
        self.pipelining = pipelining
        self.connections = 0
        self.commands: list[str] = []
        self.messages: list[Received] = []
        self._replies: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def reply(self, command: str, reply: str, times: int = 1) -> None:
        """Answer the next `times` `command`s (one of COMMANDS; END is the end of the data) with
        `reply` (several lines joined with CRLF) instead of the usual one. Replies queue up."""
        assert command in self.COMMANDS, command
        with self._lock:
            self._replies.setdefault(command, []).extend([reply] * times)

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def _reply_for(self, command: str, default: str) -> str:
        with self._lock:
            self.commands.append(command)
            queued = self._replies.get(command)
            return queued.pop(0) if queued else default

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
        self._writers.add(writer)
        closing = False

        def say(text: str) -> bool:
            nonlocal closing
            writer.write(text.encode() + b"\r\n")
            if text.startswith("421") and not closing:
                closing = True
                asyncio.get_running_loop().call_later(self.close_after, writer.close)
            return text.startswith(("2", "3"))

        def address(arg: str) -> str:
            return arg.partition("<")[2].partition(">")[0]

        try:
            if not say(self._reply_for("GREETING", "220 raw.test ESMTP")):
                return
            mail_from, rcpts, mailing = "", [], False
            while line := await reader.readline():
                command, _, arg = line.decode("utf-8", "replace").strip().partition(" ")
                command = command.upper()
                if command == "EHLO":
                    say(self._reply_for("EHLO", "\r\n".join(
                        ["250-raw.test", "250-8BITMIME", "250-SMTPUTF8"]
                        + (["250-AUTH PLAIN LOGIN"] if self.auth else [])
                        + (["250-PIPELINING"] if self.pipelining else []) + ["250 HELP"])))
                elif command == "HELO":
                    say(self._reply_for("HELO", "250 raw.test"))
                elif command == "AUTH":
                    say(self._reply_for("AUTH", "535 5.7.8 Authentication credentials invalid"))
                elif command == "MAIL":
                    if say(self._reply_for("MAIL", "250 OK")):
                        mail_from, rcpts, mailing = address(arg), [], True
                elif command == "RCPT":
                    # As Postfix: no RCPT before a MAIL was accepted, no DATA without a recipient
                    # (what a pipelining client meets after a refused MAIL or RCPT).
                    if say(self._reply_for("RCPT", "250 OK" if mailing else "503 5.5.1 Error: need MAIL command")):
                        rcpts.append(address(arg))
                elif command == "DATA":
                    if not say(self._reply_for("DATA", "354 End data with <CR><LF>.<CR><LF>" if rcpts
                                               else "554 5.5.1 Error: no valid recipients")):
                        continue
                    data = b""
                    while (chunk := await reader.readline()) not in (b".\r\n", b""):
                        data += chunk[1:] if chunk.startswith(b".") else chunk
                    if not chunk:  # the client hung up before the end of the data: no message
                        break
                    if say(self._reply_for("END", "250 OK queued")):
                        with self._lock:
                            self.messages.append(Received(mail_from, tuple(rcpts), data))
                    mail_from, rcpts, mailing = "", [], False
                elif command == "RSET":
                    say(self._reply_for("RSET", "250 OK"))
                    mail_from, rcpts, mailing = "", [], False
                elif command == "NOOP":
                    say(self._reply_for("NOOP", "250 OK"))
                elif command == "QUIT":
                    say("221 Bye")
                    break
                else:
                    say(f"500 unknown command {command}")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def start(self) -> RawSmtpServer:
        """Listen in a background thread: on a free port, or on the same port again after stop()."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="raw-smtp", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._session, self.host, self.port), self._loop).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop listening and drop open connections."""
        if self._loop is None:
            return
        loop, server = self._loop, self._server

        async def shut() -> None:
            server.close()
            for writer in list(self._writers):
                writer.close()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(shut(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = self._server = None

    def __enter__(self) -> RawSmtpServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class HangUpListener:
    """A TCP port that accepts connections and closes them at once, before any greeting (a relay
    that is starting, or a firewall's reject): counts the accepted connections."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.connections = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> HangUpListener:
        self._sock = socket.create_server((self.host, self.port), reuse_port=False)
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept, name="hang-up", daemon=True)
        self._thread.start()
        return self

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            self.connections += 1
            conn.close()

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._thread.join(timeout=10)
            self._sock.close()
            self._thread = self._sock = None

    def __enter__(self) -> HangUpListener:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on (bound, then released): connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
