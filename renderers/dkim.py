"""DKIM signatures for outgoing email, over dkimpy (``import dkim``).

Keys come from one directory, named ``<selector>.<domain>.pem`` (RSA private key, PEM, PKCS#1 or
PKCS#8: signs rsa-sha256) or ``<selector>.<domain>.ed25519`` (the base64 private key dkimpy's
``dknewkey --ktype ed25519`` writes: signs ed25519-sha256). ``load_keys`` reads and checks them
once; ``DkimSigner.sign`` then prepends one DKIM-Signature per key of the message's From domain
(relaxed/relaxed) and leaves mail from any other domain as it is.

dkimpy parses, canonicalises and hashes (``rfc822_parse``, ``CanonicalizationPolicy``,
``hash_headers``): the signed bytes are its. The signature itself is made by `cryptography`
(OpenSSL), ~20x faster than dkimpy's pure-Python RSA, and its Ed25519 without PyNaCl's per-call
key expansion. Tests verify every signature with ``dkim.verify``.

Key material never leaves ``DkimKey.private``: it is not in a repr, a log line or an error message
(errors name the file and what is wrong with it, nothing it contains).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Iterable, Literal

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy, correct_empty_body, strip_trailing_lines

from renderers.errors import RenderError

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]

SUFFIXES: dict[str, Algorithm] = {".pem": "rsa-sha256", ".ed25519": "ed25519-sha256"}
MIN_RSA_BITS = 1024  # receivers ignore shorter keys (RFC 8301); 2048 is what to make

# Signed when present, each listed twice ("oversigned"): a header of these added after signing,
# even one the message did not have, breaks the signature instead of riding along as signed.
SIGNED_HEADERS = (
    b"from", b"to", b"subject", b"date", b"message-id", b"reply-to", b"mime-version", b"content-type",
    b"list-unsubscribe", b"list-unsubscribe-post",
)
_RELAXED = (b"relaxed", b"relaxed")
_RELAXED_POLICY = CanonicalizationPolicy.from_c_value(b"/".join(_RELAXED))  # built once, used per message
_SELECTOR = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$")
_DOMAIN = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}$")


class DkimKeyError(ValueError):
    """A key directory or file that cannot be used; the message names the file, never its content."""


class DkimSigningError(RenderError):
    """dkimpy refused to sign a message (the message is at fault: it fails like a render error)."""


@dataclass(frozen=True)
class DkimKey:
    """One private key: what its file name says, and the key loaded by `cryptography`, which signs."""

    selector: str
    domain: str  # lower case
    algorithm: Algorithm
    path: Path
    private: RSAPrivateKey | Ed25519PrivateKey = field(repr=False, compare=False)

    @property
    def record_name(self) -> str:
        """Where receivers look up the public key: ``<selector>._domainkey.<domain>``."""
        return f"{self.selector}._domainkey.{self.domain}"


class DkimSigner:
    """The keys of a directory by domain; immutable once built, so threads share one."""

    def __init__(self, keys: Iterable[DkimKey]) -> None:
        by_domain: dict[str, list[DkimKey]] = {}
        for key in keys:
            by_domain.setdefault(key.domain, []).append(key)
        self._keys = {domain: tuple(found) for domain, found in by_domain.items()}

    def __repr__(self) -> str:
        return f"DkimSigner({', '.join(k.record_name for k in self.keys) or 'no keys'})"

    @property
    def keys(self) -> tuple[DkimKey, ...]:
        return tuple(key for found in self._keys.values() for key in found)

    def signs(self, domain: str) -> bool:
        """Whether mail from ``domain`` gets a signature."""
        return domain.lower() in self._keys

    def sign(self, message: bytes, domain: str | None = None) -> bytes:
        """``message`` with a DKIM-Signature header prepended per key of its From domain, or
        unchanged when that domain has no key. ``domain`` is the From domain when the caller knows
        it (it saves reading the header). CRLF line ends are kept. Raises DkimSigningError."""
        if not self._keys or (domain is not None and domain.lower() not in self._keys):
            return message
        try:
            headers, body = _parse(message)
        except dkim.DKIMException as exc:
            raise DkimSigningError(f"DKIM: the message cannot be parsed ({type(exc).__name__})") from None
        keys = self._keys.get((domain or _from_domain(headers) or "").lower())
        if not keys:
            return message
        present = {name.lower() for name, _value in headers}
        include = [name for name in SIGNED_HEADERS if name in present]
        include += include  # oversigned: see SIGNED_HEADERS
        canonical = _RELAXED_POLICY.canonicalize_headers(headers)
        body_hash = base64.b64encode(hashlib.sha256(_canonical_body(body)).digest())
        try:  # each key signs the message as given: no signature covers another
            signatures = [_signature(canonical, body_hash, key, include) for key in keys]
        except dkim.DKIMException as exc:
            # dkimpy's own words may quote what it parsed: name the kind of failure only.
            raise DkimSigningError(f"DKIM signing failed ({type(exc).__name__})") from None
        return b"".join(signatures) + message


def _parse(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """dkimpy's ``rfc822_parse`` of the header block; the body as it is when its line ends are all
    CRLF (what rfc822_parse would return, without splitting and joining every body line)."""
    head, blank, body = message.partition(b"\r\n\r\n")
    if not blank or body.count(b"\n") != body.count(b"\r\n"):
        return dkim.rfc822_parse(message)
    return dkim.rfc822_parse(head + blank)[0], body


def _canonical_body(body: bytes) -> bytes:
    """The relaxed canonical body. Its two whitespace rewrites (trailing space on a line, runs of
    spaces and tabs) change nothing in a body without a tab, two spaces in a row or a space before a
    line end, as a quoted-printable or base64 body mostly is: then only the trailing empty lines
    go, without two regular-expression passes over every space of the body (~0.1 ms a message)."""
    if b"\t" in body or b"  " in body or b" \r\n" in body:
        return _RELAXED_POLICY.canonicalize_body(body)
    return correct_empty_body(strip_trailing_lines(body))


def _signature(canonical: list[tuple[bytes, bytes]], body_hash: bytes, key: DkimKey, include: list[bytes]) -> bytes:
    """One DKIM-Signature header (relaxed/relaxed), CRLF-terminated, over the canonical headers.

    The header hash is dkimpy's ``hash_headers``, as its own ``DKIM.sign`` computes it; RSA signs
    that SHA-256 digest (PKCS#1 v1.5), Ed25519 signs the digest's 32 bytes (RFC 8463). The header
    is folded only at the spaces after its semicolons, b= on a line of its own: relaxed
    canonicalisation turns each fold back into the space it replaced, so the value a verifier
    hashes is the one signed here.
    """
    domain = key.domain.encode("ascii")
    fields = [
        (b"v", b"1"), (b"a", key.algorithm.encode("ascii")), (b"c", b"relaxed/relaxed"), (b"d", domain),
        (b"i", b"@" + domain), (b"q", b"dns/txt"), (b"s", key.selector.encode("ascii")),
        (b"t", str(int(time.time())).encode("ascii")), (b"h", b" : ".join(include)), (b"bh", body_hash), (b"b", b""),
    ]
    unsigned = b"; ".join(name + b"=" + value for name, value in fields)
    digest = hashlib.sha256()
    dkim.hash_headers(digest, _RELAXED_POLICY, canonical, include, (b"DKIM-Signature", b" " + unsigned), dict(fields))
    if isinstance(key.private, RSAPrivateKey):
        signature = key.private.sign(digest.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    else:
        signature = key.private.sign(digest.digest())
    folded = unsigned.replace(b"; ", b";\r\n ")  # each tag on its own line, b= last
    return b"DKIM-Signature: " + folded + base64.b64encode(signature) + b"\r\n"


def _from_domain(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"from":
            addr = parseaddr(value.decode("ascii", "replace").replace("\r\n", ""))[1]
            return addr.rpartition("@")[2].lower() or None
    return None


def load_keys(directory: str | Path) -> DkimSigner:
    """Every key of ``directory`` (named ``<selector>.<domain>.pem`` or ``.ed25519``), read and
    checked now. Other files (a ``.txt`` with the DNS record, say) and hidden entries (such as
    Kubernetes' ``..data`` in a mounted Secret) are left alone. Raises DkimKeyError."""
    folder = Path(directory)
    if not folder.is_dir():
        raise DkimKeyError(f"{folder} is not a directory" if folder.exists() else f"{folder} does not exist")
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise DkimKeyError(f"{folder}: cannot list it ({exc.strerror})") from None
    keys = []
    for path in entries:
        algorithm = SUFFIXES.get(path.suffix)
        if algorithm is None or path.name.startswith(".") or not path.is_file():
            continue
        keys.append(_load_key(path, algorithm))
    return DkimSigner(keys)


def _load_key(path: Path, algorithm: Algorithm) -> DkimKey:
    selector, _, domain = path.name[:-len(path.suffix)].partition(".")
    if not _SELECTOR.match(selector) or not _DOMAIN.match(domain):
        raise DkimKeyError(f"{path}: the name must be <selector>.<domain>{path.suffix}, "
                           "e.g. mail2026.example.com" + path.suffix)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DkimKeyError(f"{path}: cannot read it ({exc.strerror})") from None
    private = _rsa_key(path, data) if algorithm == "rsa-sha256" else _ed25519_key(path, data)
    return DkimKey(selector=selector, domain=domain.lower(), algorithm=algorithm, path=path, private=private)


def _rsa_key(path: Path, data: bytes) -> RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        key = None  # not str(exc): a parse error may quote the bytes it choked on
    if not isinstance(key, RSAPrivateKey):
        raise DkimKeyError(f"{path}: not an unencrypted RSA private key in PEM form (PKCS#1 or PKCS#8)")
    if key.key_size < MIN_RSA_BITS:
        raise DkimKeyError(f"{path}: an RSA key of {key.key_size} bits; receivers need at least {MIN_RSA_BITS} "
                           "(make 2048)")
    return key


def _ed25519_key(path: Path, data: bytes) -> Ed25519PrivateKey:
    try:
        seed = base64.b64decode(b"".join(data.split()), validate=True)  # the file may end in a newline
    except (binascii.Error, ValueError):
        seed = b""
    if len(seed) != 32:
        raise DkimKeyError(f"{path}: not an ed25519 private key (32 bytes in base64, as dknewkey writes it)")
    return Ed25519PrivateKey.from_private_bytes(seed)
