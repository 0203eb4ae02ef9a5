"""One email as bytes: multipart/alternative (text, then HTML), every header checked for injection.

The bytes are built directly rather than with ``email.message``: it is several times faster (see
``build_email``) and puts every header through one gate, ``_checked``. Both parts are UTF-8,
quoted-printable (base64 when mostly non-ASCII), so the boundary ``=_<hex>`` can never occur in a
body. Lines end in CRLF, the canonical form on the wire.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from datetime import datetime, timezone
from email.utils import format_datetime, getaddresses, parseaddr
from typing import Mapping
from urllib.parse import unquote

from renderers.errors import HeaderInjection, InvalidAddress, RenderError

_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_CONTROL_BYTES = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}$")
_MESSAGE_ID = re.compile(r"^<[!-;=?-~]+@[!-;=?-~]+>$")  # printable ASCII without < > and spaces
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
_MAX_LINE = 990

_OWN_HEADERS = frozenset({
    "from", "to", "subject", "date", "message-id", "reply-to", "list-unsubscribe",
    "list-unsubscribe-post", "mime-version", "content-type", "content-transfer-encoding",
})
_MESSAGE_ID_NAMESPACE = uuid.UUID("6f1c9a9e-3b7d-5a53-9d38-6c2d3f0e8b41")

Address = str | tuple[str | None, str]


def _checked(header: str, value: str) -> str:
    """Refuse CR, LF and other control characters in a header value, raw or RFC 2047 encoded."""
    if _CONTROL.search(value):
        raise HeaderInjection(f"{header}: line breaks and control characters are not allowed")
    for match in _ENCODED_WORD.finditer(value):
        data = match.group(3).encode("ascii", "replace")
        try:
            if match.group(2) in "bB":
                decoded = base64.b64decode(data + b"=" * (-len(data) % 4))
            else:
                decoded = binascii.a2b_qp(data, header=True)
        except (binascii.Error, ValueError):
            raise HeaderInjection(f"{header}: an encoded word that cannot be decoded") from None
        if _CONTROL_BYTES.search(decoded):
            raise HeaderInjection(f"{header}: an encoded word hides a line break or control character")
    return value


def _encoded_words(value: str, used: int = 0) -> str:
    """RFC 2047 base64 words, split on character boundaries and folded so lines stay within 76
    characters; ``used`` is how much of the first line is already taken (``"Subject: "``)."""
    room = 45  # bytes of text per 60-character base64 word: 12 + 60 = 72 characters
    first = max(3, (76 - used - 12) // 4 * 3)
    whole = value.encode("utf-8")
    if len(whole) <= min(room, first):
        return f"=?utf-8?b?{base64.b64encode(whole).decode('ascii')}?="
    words: list[str] = []
    chunk = bytearray()
    limit = first
    for char in value:
        data = char.encode("utf-8")
        if chunk and len(chunk) + len(data) > limit:
            words.append(f"=?utf-8?b?{base64.b64encode(chunk).decode('ascii')}?=")
            chunk.clear()
            limit = room
        chunk += data
    if chunk or not words:
        words.append(f"=?utf-8?b?{base64.b64encode(chunk).decode('ascii')}?=")
    return "\r\n ".join(words)


def _text_header(header: str, value: str) -> str:
    """An unstructured header value (Subject, extras): raw when plain ASCII, else encoded words."""
    _checked(header, value)
    if value.isascii() and "=?" not in value and len(value) + len(header) < _MAX_LINE:
        return value
    return _encoded_words(value, used=len(header) + 2)


def parse_address(value: Address, *, field: str = "address") -> tuple[str, str]:
    """``(display name, addr)`` from ``"Name <a@b.example>"``, a bare address or a pair.

    Raises InvalidAddress unless it is exactly one plain ``local@domain`` address, and
    HeaderInjection for line breaks or control characters anywhere in it.
    """
    if isinstance(value, tuple):
        name, addr = value[0] or "", value[1]
        _checked(field, name)
    elif is_valid_address(value):  # the common case, a bare address: no need for the slow parser
        return "", value
    else:
        _checked(field, value)
        if len(getaddresses([value])) != 1:
            raise InvalidAddress(f"{field}: expected one address, got {value!r}")
        name, addr = parseaddr(value)
        if not addr and value.strip():
            raise InvalidAddress(f"{field}: {value!r} is not an email address")
    _checked(field, addr)
    if not is_valid_address(addr):
        raise InvalidAddress(f"{field}: {addr!r} is not a valid email address")
    return name.strip(), addr


def is_valid_address(addr: str) -> bool:
    """Whether ``addr`` is one plain ASCII ``local@domain.tld`` address (no name, no spaces)."""
    if not isinstance(addr, str) or addr.count("@") != 1 or len(addr) > 254:
        return False
    local, domain = addr.split("@")
    return len(local) <= 64 and bool(_LOCAL.match(local)) and bool(_DOMAIN.match(domain))


def format_address(name: str, addr: str, *, used: int = 0) -> str:
    """An address header value: ``addr``, ``"Name" <addr>`` or ``=?utf-8?b?...?= <addr>``."""
    if not name:
        return addr
    if not name.isascii() or "=?" in name or len(name) > 60:
        phrase = _phrase(name, used)
        last = len(phrase.rsplit("\r\n", 1)[-1]) if "\r\n" in phrase else used + len(phrase)
        gap = " " if last + len(addr) + 3 <= 76 else "\r\n "
        return f"{phrase}{gap}<{addr}>"
    if _SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{addr}>"


def _phrase(name: str, used: int) -> str:
    """A display name as encoded words, folded. Plain ASCII words stay atoms between them, so
    two encoded words meet only inside a long non-ASCII run: parsers disagree on whether the
    space between adjacent encoded words in a phrase counts (Python's keeps it)."""
    if len(name.encode("utf-8")) <= (76 - used - 12) // 4 * 3:
        return _encoded_words(name, used)
    pieces: list[tuple[bool, str]] = []  # (is a plain atom, text)
    run: list[str] = []
    for token in name.split(" "):
        if token and token.isascii() and not _SPECIALS.search(token) and "=?" not in token:
            if run:
                pieces.append((False, " ".join(run)))
                run = []
            pieces.append((True, token))
        else:
            run.append(token)
    if run:
        pieces.append((False, " ".join(run)))
    out: list[str] = []
    line = used
    for is_atom, text in pieces:
        if out:  # fold before a piece that would fit whole on a line of its own
            size = len(text.encode("utf-8"))
            if is_atom:
                needed = size
            else:
                needed = 12 + (size + 2) // 3 * 4 if size <= 45 else 20
            out.append(" " if line + 1 + needed <= 76 else "\r\n ")
            line = line + 1 if out[-1] == " " else 1
        piece = text if is_atom else _encoded_words(text, line)
        out.append(piece)
        line = len(piece.rsplit("\r\n", 1)[-1]) if "\r\n" in piece else line + len(piece)
    return "".join(out)


def _unsubscribe_url(url: str) -> str:
    _checked("List-Unsubscribe", url)
    if _CONTROL.search(unquote(url)):
        raise HeaderInjection("List-Unsubscribe: the URL hides an encoded line break (%0d/%0a)")
    if any(ch in url for ch in " <>\"") or not url.lower().startswith(("https://", "http://", "mailto:")):
        raise RenderError(f"List-Unsubscribe: {url!r} is not an http(s) or mailto URL")
    url = "".join(ch if ch.isascii() else "".join(f"%{b:02X}" for b in ch.encode()) for ch in url)
    if len(url) > _MAX_LINE - 20:
        raise RenderError("List-Unsubscribe: the URL is too long for a header")
    return url


def _body(content: str, content_type: str) -> bytes:
    text = content.replace("\r\n", "\n").replace("\r", "\n")
    data = text.encode("utf-8")
    if len(data) - len(text) > len(text) // 4:  # mostly non-ASCII: base64 is smaller
        encoding = "base64"
        body = base64.encodebytes(data).replace(b"\n", b"\r\n")
    else:
        encoding = "quoted-printable"
        # the CRLF before the next boundary belongs to the boundary, so always add one
        body = binascii.b2a_qp(data, istext=True).replace(b"\n", b"\r\n") + b"\r\n"
    head = (
        f'Content-Type: {content_type}; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
    )
    return head.encode("ascii") + body


def build_email(
    *,
    from_addr: Address,
    to_addr: Address,
    subject: str,
    html: str,
    text: str,
    message_id: str,
    reply_to: Address | None = None,
    list_unsubscribe: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
    date: datetime | None = None,
) -> bytes:
    """One email as bytes: multipart/alternative with text/plain then text/html (UTF-8).

    Headers: From, To, Subject (RFC 2047 when non-ASCII), Date, Message-ID, Reply-To when given,
    ``List-Unsubscribe: <url>`` plus ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` when
    ``list_unsubscribe`` is given, then ``extra_headers``. Raises HeaderInjection for CR/LF in any
    header value (raw, RFC 2047 encoded, or percent-encoded in the URL), InvalidAddress for a bad
    address, RenderError for other unusable values. Costs ~40 us (``email.mime``: ~450 us).
    """
    headers = [
        f"From: {format_address(*parse_address(from_addr, field='From'), used=6)}",
        f"To: {format_address(*parse_address(to_addr, field='To'), used=4)}",
        f"Subject: {_text_header('Subject', subject or '')}",
    ]
    when = date or datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    headers.append(f"Date: {format_datetime(when)}")
    if not _MESSAGE_ID.match(_checked("Message-ID", message_id)):
        raise RenderError(f"Message-ID: {message_id!r} is not of the form <id@domain>")
    headers.append(f"Message-ID: {message_id}")
    if reply_to:
        reply = parse_address(reply_to, field="Reply-To")
        headers.append(f"Reply-To: {format_address(*reply, used=10)}")
    if list_unsubscribe:
        headers.append(f"List-Unsubscribe: <{_unsubscribe_url(list_unsubscribe)}>")
        headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    for name, value in (extra_headers or {}).items():
        if not _HEADER_NAME.match(name):
            raise HeaderInjection(f"{name!r} is not a valid header name")
        if name.lower() in _OWN_HEADERS:
            raise RenderError(f"{name}: this header is set by the message builder")
        headers.append(f"{name}: {_text_header(name, str(value))}")
    boundary = "=_" + hashlib.sha256(message_id.encode("ascii")).hexdigest()[:24]
    headers.append("MIME-Version: 1.0")
    headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
    delimiter = f"--{boundary}\r\n".encode("ascii")
    return b"".join((
        "\r\n".join(headers).encode("ascii"), b"\r\n\r\n",
        delimiter, _body(text, "text/plain"),
        delimiter, _body(html, "text/html"),
        f"--{boundary}--\r\n".encode("ascii"),
    ))


def stable_message_id(campaign_id: str, contact_id: str, domain: str) -> str:
    """The Message-ID of a (campaign, contact) pair: the same on every attempt, unique per pair."""
    domain = domain.strip().lower()
    if not _DOMAIN.match(domain):
        raise InvalidAddress(f"{domain!r} is not a domain name for a Message-ID")
    key = uuid.uuid5(_MESSAGE_ID_NAMESPACE, f"{campaign_id}\x00{contact_id}")
    return f"<{key.hex}@{domain}>"
