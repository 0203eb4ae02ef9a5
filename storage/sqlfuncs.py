"""SQL functions SQLite lacks, registered on every SQLite connection (see storage.db)."""

from __future__ import annotations

from storage.addresses import is_email
from storage.coerce import as_date, as_number, fold


def register_sqlite(dbapi_connection) -> None:
    """Register ``lower`` (Unicode, not ASCII-only), ``cd_number``, ``cd_date`` and ``cd_is_email``."""
    dbapi_connection.create_function("lower", 1, fold, deterministic=True)
    dbapi_connection.create_function("cd_number", 1, _number, deterministic=True)
    dbapi_connection.create_function("cd_date", 1, _date, deterministic=True)
    dbapi_connection.create_function("cd_is_email", 1, is_email, deterministic=True)


def _number(value):
    return as_number(value if value is None else str(value))


def _date(value):
    return as_date(value if value is None else str(value))
