"""Engines and sessions for PostgreSQL and SQLite."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from storage import sqlfuncs


def make_engine(url: str, **kwargs) -> Engine:
    """Create an engine; for SQLite, create the file's folder and register our SQL functions."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    # An unreachable server (not a refused port) would otherwise hold a connect for the OS's TCP
    # timeout, minutes; the API checks tokens on its event loop, so a connect must give up sooner.
    kwargs.setdefault("connect_args", {"connect_timeout": 10})
    engine = create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine)
    return engine


# A connection is pinged before use only when it idled in the pool for longer than this. SQLAlchemy's
# pool_pre_ping pings on every checkout: a round trip more per API request (two checkouts: the token,
# the read) for ~6% of the API's CPU. A connection back in the pool within the second was working a
# moment ago; one the server dropped since (a restart) fails its statement, which invalidates the
# whole pool, so the next checkouts connect afresh, as they would during any outage.
PING_AFTER_IDLE = 1.0


def _ping_when_idle(engine: Engine) -> None:
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def note_idle(_dbapi_connection, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def ping_if_idle(dbapi_connection, record, _proxy) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) < PING_AFTER_IDLE:
            return
        try:
            dialect.do_ping(dbapi_connection)  # the dialect's own: leaves no transaction open
        except dialect.loaded_dbapi.Error as error:
            # The pool drops this connection and checks out another (a new one when none is left).
            raise exc.DisconnectionError(f"connection lost while idle: {error}") from error


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    # WAL lets the scheduler, the worker and the CLI share one file; foreign keys are off by default.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    sqlfuncs.register_sqlite(dbapi_connection)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def is_postgres(engine_or_session) -> bool:
    """True when the bind (an engine, a connection or a session's) is PostgreSQL (dialect-specific SQL paths)."""
    bind = engine_or_session.get_bind() if isinstance(engine_or_session, Session) else engine_or_session
    return bind.dialect.name == "postgresql"


def dialect_insert(session: Session | Engine | Connection, model: Any) -> Any:
    """The bind's own INSERT construct for ``model`` (PostgreSQL or SQLite), which has
    ``on_conflict_do_nothing``: the ledger, archived messages and tasks are written idempotently."""
    return (postgresql.insert if is_postgres(session) else sqlite.insert)(model)


_SAFE_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def safe_identifier(name: str) -> str:
    """Refuse anything but a plain SQL identifier (used for database names in tests and tools)."""
    if not _SAFE_IDENT.match(name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return name
