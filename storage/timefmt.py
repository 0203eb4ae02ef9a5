"""The contract's time format: ``Y-m-d H:i:s`` in UTC."""

from __future__ import annotations

import re
from datetime import datetime, timezone

FORMAT = "%Y-%m-%d %H:%M:%S"
DATE_FORMAT = "%Y-%m-%d"


_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")


def parse(text: str) -> datetime:
    """Parse ``Y-m-d H:i:s`` as an aware UTC datetime; raise ValueError on any other shape.

    The shape is checked first, then ``fromisoformat`` reads it: ~100x faster than ``strptime``,
    which matters when a million contacts carry several times each.
    """
    if not isinstance(text, str) or not _SHAPE.fullmatch(text):
        raise ValueError("must be a date in Y-m-d H:i:s format")
    try:
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    except ValueError:
        raise ValueError("must be a date in Y-m-d H:i:s format") from None


def parse_loose(text: str) -> datetime:
    """Parse ``Y-m-d H:i:s`` or ``Y-m-d`` (midnight) as an aware UTC datetime."""
    if isinstance(text, str) and len(text) == 10:
        try:
            return datetime.strptime(text, DATE_FORMAT).replace(tzinfo=timezone.utc)
        except ValueError:
            raise ValueError("must be a date in Y-m-d or Y-m-d H:i:s format") from None
    return parse(text)


def fmt(value: datetime | None) -> str | None:
    """Format an aware or naive-UTC datetime as ``Y-m-d H:i:s``; None stays None."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc)
    return value.strftime(FORMAT)


def now() -> datetime:
    """The current time, aware UTC, truncated to whole seconds like the contract's format."""
    return datetime.now(timezone.utc).replace(microsecond=0)
