"""A real SMTP server (aiosmtpd) for tests: records what it accepts, counts connections, and
answers scripted recipients with chosen replies or a dropped connection.

    with SmtpTestServer() as server:
        server.script("bob@example.com", "421 try later", times=2)
        ... send to server.url ...
        assert server.delivered_to("bob@example.com")

or use the `smtp_server` fixture (import it into the test module).
"""

from __future__ import annotations

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

    def __init__(self, credentials: tuple[str, str] | None = None, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, 0
        self.credentials = credentials
        self.messages: list[Received] = []
        self.connections = 0
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
        auth: dict[str, Any] = {}
        if self.credentials:
            auth = dict(authenticator=self._authenticate, auth_required=True, auth_require_tls=False)
        self._controller = _CountingController(
            self, self, hostname=self.host, port=self.port, server_hostname="smtp.test", **auth)
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
