"""The local capturing SMTP server used by `run`/`demo` when SMTP_URL is unset: every accepted
message becomes one file in a Maildir (read it with any mail client, or `mailbox.Maildir`)."""

from __future__ import annotations

import asyncio
import mailbox
import threading
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class BoundController(Controller):
    """An aiosmtpd Controller that may listen on port 0: the port the OS picked is put in `.port`
    before the controller connects to itself to check it is up."""

    def _create_server(self):
        create = super()._create_server()

        async def bind() -> asyncio.AbstractServer:
            server = await create
            self.port = server.sockets[0].getsockname()[1]
            return server

        return bind()


class _MaildirHandler:
    def __init__(self, maildir: Path) -> None:
        self.maildir = mailbox.Maildir(maildir, create=True)
        self.count = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # Return-Path / Delivered-To as a local delivery agent writes them: the envelope stays visible.
        trace = f"Return-Path: <{envelope.mail_from}>\r\n".encode()
        trace += b"".join(f"Delivered-To: {rcpt}\r\n".encode() for rcpt in envelope.rcpt_tos)
        with self._lock:
            # Maildir files conventionally hold LF line endings, not SMTP's CRLF.
            key = self.maildir.add((trace + envelope.original_content).replace(b"\r\n", b"\n"))
            self.count += 1
        return f"250 OK queued as {key}"


class MailCatcher:
    """A capturing SMTP server on `host:port` (0 = any free port) writing into a Maildir."""

    def __init__(self, maildir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.maildir = Path(maildir)
        self.host, self.port = host, port
        self._handler = _MaildirHandler(self.maildir)
        self._controller: BoundController | None = None

    @property
    def count(self) -> int:
        """Messages accepted since this catcher was created."""
        return self._handler.count

    @property
    def url(self) -> str:
        """The SMTP_URL to send to (valid once started)."""
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> str:
        """Start listening in a background thread; returns the `smtp://host:port` URL."""
        if self._controller is not None:
            return self.url
        controller = BoundController(
            self._handler, hostname=self.host, port=self.port,
            server_hostname="campaign-dispatch.local", enable_SMTPUTF8=True,
        )
        controller.start()
        self._controller, self.port = controller, controller.port
        return self.url

    def stop(self) -> None:
        """Stop listening (messages already written stay in the Maildir)."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> MailCatcher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
