"""DKIM signatures for outgoing email: relaxed/relaxed, rsa-sha256 or ed25519-sha256.

Keys come from one directory, named ``<selector>.<domain>.pem`` (RSA private key, PEM, PKCS#1 or
PKCS#8: signs rsa-sha256) or ``<selector>.<domain>.ed25519`` (the base64 private key dkimpy's
``dknewkey --ktype ed25519`` writes: signs ed25519-sha256). ``load_keys`` reads and checks them
once; ``DkimSigner.sign`` then prepends one DKIM-Signature per key of the message's From domain
(relaxed/relaxed) and leaves mail from any other domain as it is.

The signed bytes are dkimpy's (``import dkim``), computed here without its per-message objects:
``_parse`` is its ``rfc822_parse`` of a CRLF message, ``_signed_headers`` its ``select_headers``
and relaxed ``canonicalize_headers`` of the signed fields only, ``_canonical_body`` its relaxed
body, and the header hash is the one its ``hash_headers`` makes. A message dkimpy's parse would
rewrite (bare LF line ends, an empty line first, no blank line) is parsed by dkimpy itself. The
tests check each of these against dkimpy on generated input, sign the same bytes as dkimpy's
functions would, and verify every signature with ``dkim.verify``. What is the same for every
message of a key (its tags up to ``t=``, the padding) is made once, in ``DkimSigner``. The
signature itself is made by `cryptography` (OpenSSL), ~20x faster than dkimpy's pure-Python RSA,
and its Ed25519 without PyNaCl's per-call key expansion.

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

from renderers.errors import RenderError

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]

SUFFIXES: dict[str, Algorithm] = {".pem": "rsa-sha256", ".ed25519": "ed25519-sha256"}
MIN_RSA_BITS = 1024  # receivers ignore shorter keys (RFC 8301); 2048 is what to make

# Signed when present, each present one listed twice ("oversigned"): a second copy of one of these
# added after signing breaks the signature instead of riding along as the signed one.
SIGNED_HEADERS = (
    b"from", b"to", b"subject", b"date", b"message-id", b"reply-to", b"mime-version", b"content-type",
    b"list-unsubscribe", b"list-unsubscribe-post",
)
_SIGNED = frozenset(SIGNED_HEADERS)
_SELECTOR = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$")
_DOMAIN = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}$")
# What dkimpy's rfc822_parse takes for a field name: printable ASCII up to the first colon.
_FIELD_NAME = re.compile(rb"[\x21-\x7e]+")
# Relaxed canonicalisation makes each run of spaces and tabs one space. Done here as tabs made spaces
# (bytes.replace) and then runs of two spaces or more made one: a literal prefix the regular
# expression engine searches fast, where dkimpy's [\t ]+ is tried at every byte and matches, and
# replaces, every single space (~30 us a 3 KB body that has any run).
_SPACES = re.compile(rb"  +")


class DkimKeyError(ValueError):
    """A key directory or file that cannot be used; the message names the file, never its content."""


class DkimSigningError(RenderError):
    """A message that cannot be signed (the message is at fault: it fails like a render error)."""


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


class _KeySigner:
    """What signing with one key needs, made once: its tags up to ``t=`` and its signing call."""

    __slots__ = ("prefix", "_sign", "_options")

    def __init__(self, key: DkimKey) -> None:
        domain = key.domain.encode("ascii")
        # The tags that do not change from message to message, in the order they have always had.
        self.prefix = (b"v=1; a=" + key.algorithm.encode("ascii") + b"; c=relaxed/relaxed; d=" + domain
                       + b"; i=@" + domain + b"; q=dns/txt; s=" + key.selector.encode("ascii"))
        self._sign = key.private.sign
        # RSA signs the SHA-256 digest as PKCS#1 v1.5 does; Ed25519 signs the digest's 32 bytes (RFC 8463).
        rsa = isinstance(key.private, RSAPrivateKey)
        self._options = (padding.PKCS1v15(), Prehashed(hashes.SHA256())) if rsa else ()

    def header(self, headers_hash: hashlib._Hash, tags: bytes) -> bytes:
        """The DKIM-Signature header, CRLF-terminated, given the hash of the signed header fields so
        far and the tags from ``t=`` to the empty ``b=``.

        The header's own contribution to the hash is what dkimpy's ``hash_headers`` adds for it:
        relaxed, ``b=`` empty, no CRLF. Relaxed canonicalisation changes nothing in this value (one
        space after each semicolon and around each colon of h=, no space at either end), so it is
        ``dkim-signature:`` and the value as written. The header is folded only at the spaces after
        its semicolons, b= on a line of its own: relaxed canonicalisation turns each fold back into
        the space it replaced, so the value a verifier hashes is the one signed here.
        """
        unsigned = self.prefix + tags
        digest = headers_hash.copy()
        digest.update(b"dkim-signature:" + unsigned)
        signature = self._sign(digest.digest(), *self._options)
        folded = unsigned.replace(b"; ", b";\r\n ")  # each tag on its own line, b= last
        return b"DKIM-Signature: " + folded + base64.b64encode(signature) + b"\r\n"


class DkimSigner:
    """The keys of a directory by domain; immutable once built, so threads share one."""

    def __init__(self, keys: Iterable[DkimKey]) -> None:
        by_domain: dict[str, list[DkimKey]] = {}
        for key in keys:
            by_domain.setdefault(key.domain, []).append(key)
        self._keys = {domain: tuple(found) for domain, found in by_domain.items()}
        self._signers = {domain: tuple(_KeySigner(key) for key in found) for domain, found in self._keys.items()}

    def __repr__(self) -> str:
        return f"DkimSigner({', '.join(k.record_name for k in self.keys) or 'no keys'})"

    @property
    def keys(self) -> tuple[DkimKey, ...]:
        return tuple(key for found in self._keys.values() for key in found)

    def signs(self, domain: str) -> bool:
        """Whether mail from ``domain`` gets a signature."""
        return domain.lower() in self._keys

    def sign(self, message: bytes, domain: str | None = None, *, crlf: bool = False) -> bytes:
        """``message`` with a DKIM-Signature header prepended per key of its From domain, or
        unchanged when that domain has no key. ``domain`` is the From domain when the caller knows
        it (it saves reading the header). CRLF line ends are kept. ``crlf``: the caller vouches that
        every line of ``message`` ends in CRLF (as ``renderers.mime`` builds it), which saves
        counting its line ends: ~3.5 us of a 3 KB message. Raises DkimSigningError."""
        if not self._keys or (domain is not None and domain.lower() not in self._keys):
            return message
        try:
            headers, body = _parse(message, crlf)
        except dkim.DKIMException as exc:
            raise DkimSigningError(f"DKIM: the message cannot be parsed ({type(exc).__name__})") from None
        signers = self._signers.get((domain or _from_domain(headers) or "").lower())
        if not signers:
            return message
        signed, names = _signed_headers(headers)
        body_hash = base64.b64encode(hashlib.sha256(_canonical_body(body)).digest())
        tags = b"; t=" + str(int(time.time())).encode("ascii") + b"; h=" + names + b"; bh=" + body_hash + b"; b="
        headers_hash = hashlib.sha256(signed)
        # each key signs the message as given: no signature covers another
        return b"".join([signer.header(headers_hash, tags) for signer in signers]) + message


def _parse(message: bytes, crlf: bool = False) -> tuple[list[list[bytes]], bytes]:
    """dkimpy's ``rfc822_parse``: the header fields as [name, value] pairs, each value with its
    folds and a CRLF at the end, and the body.

    Made here for a message whose line ends are all CRLF and whose first line is not empty (the
    header block runs to the first empty line, with none inside): its lines are ``split`` at CRLF,
    and the body is the message after the blank line as it is, not split into lines and joined
    again. Any other message is dkimpy's to parse, as the lines it returns differ from the bytes.
    ``crlf``: the caller vouches for the line ends (``DkimSigner.sign``), which are not counted then.
    Raises dkim.MessageFormatError on a line that is neither a field, a fold nor an mbox From line.
    """
    head, blank, body = message.partition(b"\r\n\r\n")
    if not blank or message.startswith(b"\r\n") or (not crlf and message.count(b"\n") != message.count(b"\r\n")):
        try:
            return dkim.rfc822_parse(message)
        except IndexError:  # a fold before any field: dkimpy appends it to headers[-1]
            raise dkim.MessageFormatError("a folded line before the first header field") from None
    headers: list[list[bytes]] = []
    for line in head.split(b"\r\n"):  # none is empty: see above
        if line[0] in (0x09, 0x20):
            if not headers:
                raise dkim.MessageFormatError("a folded line before the first header field")
            headers[-1][1] += line + b"\r\n"
            continue
        name, colon, value = line.partition(b":")
        if colon and _FIELD_NAME.fullmatch(name):
            headers.append([name, value + b"\r\n"])
        elif not line.startswith(b"From "):  # an mbox From line dkimpy skips
            # dkimpy's own message quotes the line: name the problem only.
            raise dkim.MessageFormatError("unexpected characters in a header line")
    return headers, body


def _signed_headers(headers: list[list[bytes]]) -> tuple[bytes, bytes]:
    """The SIGNED_HEADERS fields of ``headers`` as they are hashed (relaxed, each with its CRLF, in
    the order dkimpy's ``select_headers`` takes them), and the h= value that names them.

    h= names each present field twice (see SIGNED_HEADERS), in SIGNED_HEADERS' order. A verifier
    takes, for each name in h=, the last field of that name not taken yet: the first time the last
    one, the second time the one before it when there is one (none otherwise: it hashes nothing).
    """
    last: dict[bytes, bytes] = {}  # by name: the last field of that name, canonical
    before: dict[bytes, bytes] = {}  # the one before it, for the few names a message has twice
    for name, value in headers:
        lower = name.lower()
        if lower in _SIGNED:
            if lower in last:
                before[lower] = last[lower]
            last[lower] = lower + b":" + _relaxed_value(value)
    names = [name for name in SIGNED_HEADERS if name in last]
    lines = [last[name] for name in names]
    if before:
        lines += [before[name] for name in names if name in before]
    return b"".join(lines), b" : ".join(names + names)


def _relaxed_value(value: bytes) -> bytes:
    """A header field's value canonicalised as dkimpy's relaxed ``canonicalize_headers`` does it:
    unfolded (each CR LF or bare LF removed), runs of spaces and tabs made one space, stripped
    (``bytes.strip``, as dkimpy: any ASCII whitespace at either end), and a CRLF added."""
    stripped = value.strip()
    # Unfolding and compressing touch whitespace only, and what is stripped is whitespace: once
    # stripped, a value without a line feed, a tab or two spaces in a row (an unfolded one, most
    # are) has nothing left for them to change.
    if b"\n" in stripped or b"\t" in stripped or b"  " in stripped:
        unfolded = value.replace(b"\r\n", b"").replace(b"\n", b"")  # what re.sub(b"\r?\n", b"") leaves
        stripped = _SPACES.sub(b" ", unfolded.replace(b"\t", b" ")).strip()
    return stripped + b"\r\n"


def _canonical_body(body: bytes) -> bytes:
    """The relaxed canonical body, as dkimpy's relaxed ``canonicalize_body`` makes it: no space or
    tab at the end of a line, each other run of them one space, no empty line at the end, and a
    CRLF to end the body, which an empty body does not get.

    dkimpy deletes the runs before a CRLF first and then makes the others one space; made one space
    first, a run before a CRLF is one space, which one ``replace`` deletes. A body without a tab or
    two spaces in a row (as a quoted-printable or base64 body mostly is) is not copied for it.
    """
    body = body.replace(b"\t", b" ")  # bytes.replace returns the body itself when there is none
    if b"  " in body:
        body = _SPACES.sub(b" ", body)
    body = body.replace(b" \r\n", b"\r\n")
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    if not end:
        return b""
    if end == len(body) - 2:  # one CRLF at the end, as a built message's body has: the body as it is
        return body
    return body[:end] + b"\r\n"


def _from_domain(headers: list[list[bytes]]) -> str | None:
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
