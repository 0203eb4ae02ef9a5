"""How a stored field value is read as text, number or date.

The filter language compares with these in Python, SQLite calls the very same functions
(registered by ``storage.sqlfuncs``) and PostgreSQL runs the equivalent SQL, so every
backend answers a filter alike.
"""

from __future__ import annotations

import re
from datetime import datetime

# Python patterns are used with ``fullmatch``: ``$`` would also match before a trailing newline,
# which PostgreSQL's ``$`` does not.
NUMBER_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?")
# PostgreSQL's regex flavour of the same patterns (no \d shortcuts that mean other things).
NUMBER_PG = r"^-?[0-9]+(\.[0-9]+)?$"
# Longer number texts are not numbers: every backend converts what it accepts to a double
# (PostgreSQL's float8 would raise on overflow or underflow; 200 digits stay within range).
NUMBER_MAX_LEN = 200
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}( [0-9]{2}:[0-9]{2}:[0-9]{2})?")
DATE_PG = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}( [0-9]{2}:[0-9]{2}:[0-9]{2})?$"


def fold(text: str | None) -> str | None:
    """Case-fold for case-insensitive comparison: Unicode lower case, one character at a time.

    That is ``str.lower`` except for its two rules PostgreSQL's ``lower()`` lacks: a final
    capital sigma becomes ``σ`` (not ``ς``) and ``İ`` becomes ``i`` (not ``i`` + a combining dot).
    """
    if text is None:
        return None
    if not isinstance(text, str):  # SQLite hands the registered ``lower`` numbers too
        text = str(text)
    folded = text.lower()
    if "ς" in folded or "\u0130" in text:
        folded = "".join("i" if char == "\u0130" else char.lower() for char in text)
    return folded


def as_number(text: str | None) -> float | None:
    """The number a text holds (``-12``, ``3.5``) as a double, else None."""
    if text is None or len(text) > NUMBER_MAX_LEN or not NUMBER_RE.fullmatch(text):
        return None
    return float(text)


def as_date(text: str | None) -> str | None:
    """A ``Y-m-d`` or ``Y-m-d H:i:s`` text normalised to ``Y-m-d H:i:s``, else None.

    Normalised dates compare correctly as text, which is how every backend compares them.
    """
    if text is None or not DATE_RE.fullmatch(text):
        return None
    return text if len(text) == 19 else text + " 00:00:00"


def is_date_value(value: object) -> bool:
    """True when a filter value is a real calendar date in one of the two accepted formats."""
    if not isinstance(value, str) or not DATE_RE.fullmatch(value):
        return False
    try:
        datetime.strptime(value, "%Y-%m-%d %H:%M:%S" if len(value) == 19 else "%Y-%m-%d")
    except ValueError:
        return False
    return True


def is_number_value(value: object) -> bool:
    """True for int/float filter values (bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def scalar_text(value: object) -> str | None:
    """How a loaded custom-field value is stored: text, with numbers and booleans spelled out."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else str(int(value))
    raise TypeError("must be a string, number, boolean or null")
