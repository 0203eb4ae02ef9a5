"""What an SMTP send can come to: accepted, refused for now (transient), refused for good
(permanent), or a fault of the relay or of our account (campaign-wide), and how aiosmtplib's and
the socket's errors map to them."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib

from worker.channels.smtp_config import SmtpConfig


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
           tls: bool = False, certificate: bool = False) -> RelayUnreachable:
        if certificate:  # TLS works, but the server's certificate is not one we can trust
            return cls(f"the SMTP server at {config.safe_url} cannot be reached ({reason}): its TLS certificate "
                       f"must be valid for {config.host} and issued by an authority this machine trusts: correct "
                       "the server's certificate, or add its authority to the system's trust store (or name it "
                       "in SSL_CERT_FILE)", reason, code)
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
    """One message with its explicit envelope (recipients are never taken from the headers).

    ``crlf``: every line of ``message`` already ends in CRLF and nowhere else is there a CR or LF
    (what ``renderers.mime`` builds), so the channel skips its scan for other line ends.
    """

    envelope_from: str
    recipients: Sequence[str]
    message: bytes
    crlf: bool = False


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
        if isinstance(ssl_error, ssl.SSLCertVerificationError):
            return RelayUnreachable.of(config, f"TLS certificate not accepted: {ssl_error.verify_message}",
                                       certificate=True)
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
