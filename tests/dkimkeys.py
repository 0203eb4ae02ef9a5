"""DKIM keys for tests, written as DKIM_KEYS_DIR expects them, and a DNS that publishes their public halves."""

from __future__ import annotations

import base64
from pathlib import Path

import dkim
import nacl.encoding
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


class StubDns:
    """``dnsfunc`` for ``dkim.verify``: the TXT record of each published key, nothing else."""

    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}
        self.asked: list[bytes] = []

    def publish(self, selector: str, domain: str, record: str) -> None:
        self.records[f"{selector}._domainkey.{domain}.".encode("ascii")] = record.encode("ascii")

    def __call__(self, name: bytes, timeout: int = 5) -> bytes | None:
        self.asked.append(name)
        return self.records.get(name)

    def verify(self, message: bytes) -> list[bool]:
        """Whether each DKIM-Signature of ``message`` verifies, in order (empty: none). The first is
        checked by ``dkim.verify`` itself; the others by index, as it does (a failure is False)."""
        count = sum(1 for name, _ in dkim.DKIM(message).headers if name.lower() == b"dkim-signature")
        results = []
        for index in range(count):
            try:
                results.append(bool(dkim.DKIM(message).verify(idx=index, dnsfunc=self)))
            except dkim.DKIMException:
                results.append(False)
        if results:
            assert results[0] == dkim.verify(message, dnsfunc=self)
        return results


def write_rsa_key(folder: Path, selector: str, domain: str, dns: StubDns | None = None, bits: int = 2048) -> Path:
    """``<selector>.<domain>.pem`` (PKCS#8, as OpenSSL 3 writes it), published in ``dns``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    path = folder / f"{selector}.{domain}.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    if dns is not None:
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        dns.publish(selector, domain, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode('ascii')}")
    return path


def write_ed25519_key(folder: Path, selector: str, domain: str, dns: StubDns | None = None) -> Path:
    """``<selector>.<domain>.ed25519`` (base64 seed and a newline, as dknewkey writes it), published in ``dns``."""
    key = nacl.signing.SigningKey.generate()
    path = folder / f"{selector}.{domain}.ed25519"
    path.write_bytes(key.encode(encoder=nacl.encoding.Base64Encoder) + b"\n")
    if dns is not None:
        public = key.verify_key.encode(encoder=nacl.encoding.Base64Encoder).decode("ascii")
        dns.publish(selector, domain, f"v=DKIM1; k=ed25519; p={public}")
    return path
