"""SMTP delivery over real TLS: STARTTLS (smtp://...?starttls=true) and implicit TLS (smtps://)
against a real aiosmtpd server with a self-signed certificate, and a certificate the client does
not trust."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from worker.channels.mailcatcher import BoundController
from worker.channels.smtp import OutgoingMail, RelayUnreachable, SmtpConfig, SmtpSender

RECIPIENTS = ["ann@example.com", "bob@example.com", "cy@example.com"]


def mail(to: str) -> bytes:
    return (f"From: news@acme.example\r\nTo: {to}\r\nSubject: Over TLS\r\n"
            f"Message-ID: <tls.{to}@acme.example>\r\n\r\nHi {to}\r\n").encode()


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, valid now."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    paths = Certificate(tmp_path / "cert.pem", tmp_path / "key.pem")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


@dataclass(frozen=True)
class Received:
    envelope_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    tls_version: str | None  # the TLS version of the session the message came over; None: plain text


class TlsRecorder:
    """aiosmtpd handler: records each accepted message and whether its session was in TLS."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        ssl_object = server.transport.get_extra_info("ssl_object")
        with self._lock:
            self.messages.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos),
                                          bytes(envelope.original_content),
                                          ssl_object.version() if ssl_object else None))
        return "250 OK queued"


@pytest.fixture
def tls_server(certificate: Certificate, request) -> Iterator[tuple[TlsRecorder, str]]:
    """aiosmtpd on 127.0.0.1 and a free port with `certificate`, and the SMTP_URL to reach it:
    "starttls" (STARTTLS required before MAIL) or "implicit" (TLS from the first byte, smtps)."""
    recorder = TlsRecorder()
    context = certificate.server_context()
    tls = {"tls_context": context, "require_starttls": True} if request.param == "starttls" \
        else {"ssl_context": context}
    controller = BoundController(recorder, hostname="127.0.0.1", port=0, **tls)
    controller.start()
    try:
        port = controller.port
        yield recorder, (f"smtp://127.0.0.1:{port}?starttls=true" if request.param == "starttls"
                         else f"smtps://127.0.0.1:{port}")
    finally:
        controller.stop()


@pytest.mark.parametrize("tls_server", ["starttls", "implicit"], indirect=True)
def test_messages_arrive_once_each_over_tls_when_the_certificate_is_trusted(tls_server, certificate, monkeypatch):
    """A relay whose certificate the host trusts (SSL_CERT_FILE) gets every message exactly once,
    with its envelope and content, and only ever inside a TLS session."""
    recorder, smtp_url = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))  # before the sender makes its TLS context
    sender = SmtpSender(SmtpConfig.from_url(smtp_url), pool_size=2, retry_delays=())
    try:
        first = sender.send("bounce@acme.example", [RECIPIENTS[0]], mail(RECIPIENTS[0]))
        rest = sender.send_many([OutgoingMail("bounce@acme.example", [r], mail(r)) for r in RECIPIENTS[1:]])
    finally:
        sender.close()

    assert [first.accepted, *(r.accepted for r in rest)] == [(r,) for r in RECIPIENTS]
    assert sorted(m.rcpt_tos for m in recorder.messages) == [(r,) for r in RECIPIENTS]  # once each
    for received in recorder.messages:
        (rcpt,) = received.rcpt_tos
        assert received.envelope_from == "bounce@acme.example"
        assert message_from_bytes(received.data)["To"] == rcpt
        assert message_from_bytes(received.data).get_payload().strip() == f"Hi {rcpt}"
        assert received.tls_version is not None and received.tls_version.startswith("TLS")


@pytest.mark.parametrize("tls_server", ["starttls", "implicit"], indirect=True)
def test_an_untrusted_certificate_is_relay_unreachable_saying_what_to_fix(tls_server, monkeypatch):
    """A relay whose certificate the host does not trust gets nothing: the send fails with
    RelayUnreachable, and the sentence for the operator names the certificate's problem and the
    fixes (the server's certificate, or the trust store / SSL_CERT_FILE), not SMTP_URL's scheme."""
    recorder, smtp_url = tls_server
    # aiosmtpd logs the handshake our client drops as an error with a traceback: expected here.
    monkeypatch.setattr(logging.getLogger("mail.log"), "disabled", True)
    config = SmtpConfig.from_url(smtp_url)
    sender = SmtpSender(config, pool_size=2, retry_delays=(), probe_delays=(0.01,))
    try:
        with pytest.raises(RelayUnreachable) as info:
            sender.send("bounce@acme.example", [RECIPIENTS[0]], mail(RECIPIENTS[0]))
    finally:
        sender.close()

    assert str(info.value) == (
        f"the SMTP server at {config.safe_url} cannot be reached (TLS certificate not accepted: self-signed "
        "certificate): its TLS certificate must be valid for 127.0.0.1 and issued by an authority this machine "
        "trusts: correct the server's certificate, or add its authority to the system's trust store (or name it "
        "in SSL_CERT_FILE)")
    assert recorder.messages == []
