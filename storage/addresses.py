"""What counts as a usable email address (validation at create time and skips at fan-out)."""

from __future__ import annotations

import re

# Deliberately plain: one @, no spaces, quotes, angle brackets or control characters, a dotted domain.
EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
# The same test in PostgreSQL's regex dialect, for set-based skips in SQL.
EMAIL_PG = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$"


def is_email(value: object) -> bool:
    """True for a single plain address like ``jane@example.com`` (max 254 characters)."""
    return isinstance(value, str) and len(value) <= 254 and EMAIL_RE.fullmatch(value) is not None


def domain_of(address: str) -> str:
    """The lower-cased domain part of an address."""
    return address.rsplit("@", 1)[-1].lower()
