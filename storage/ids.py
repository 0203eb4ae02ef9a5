"""Integer ids as the database can hold them: a larger number is no id of ours, not a query to send."""

from __future__ import annotations

from typing import Any

INT_MAX = 2**31 - 1  # users, teams, templates (INTEGER)
BIGINT_MAX = 2**63 - 1  # campaign messages, tasks (BIGINT)


def is_int_id(value: Any, limit: int = INT_MAX) -> bool:
    """True for an int (not a bool) that fits the column: PostgreSQL refuses a larger one with an
    error, where the answer should be "no such id"."""
    return isinstance(value, int) and not isinstance(value, bool) and -limit - 1 <= value <= limit
