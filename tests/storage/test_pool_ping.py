"""PostgreSQL connections lost while idle in the pool are replaced before use, without an error."""

from __future__ import annotations

import pytest
from sqlalchemy import exc, text

from storage import db
from storage.db import make_engine


def _kill(pg_url: str, pid: int) -> None:
    admin = make_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar() is True
    admin.dispose()


@pytest.mark.parametrize("isolation", [None, "AUTOCOMMIT"])
def test_a_connection_killed_while_idle_is_replaced_before_use(pg_url, monkeypatch, isolation):
    monkeypatch.setattr(db, "PING_AFTER_IDLE", 0.0)  # every checkout counts as after an idle spell
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    if isolation:
        engine = engine.execution_options(isolation_level=isolation)
    try:
        with engine.connect() as conn:
            first = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        _kill(pg_url, first)
        with engine.connect() as conn:  # the ping finds it dead; the pool connects afresh
            second = conn.execute(text("SELECT pg_backend_pid()")).scalar()
            # The ping left no transaction open: autocommit could be set, and a read works.
            assert conn.execute(text("SELECT 1")).scalar() == 1
        assert second != first
    finally:
        engine.dispose()


def test_a_connection_back_within_the_idle_second_is_used_without_a_ping(pg_url, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE", 3600.0)
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))  # checked in now: not pinged at its next checkout
        with engine.connect() as conn:
            first = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        _kill(pg_url, first)
        # Unpinged, its statement fails as lost, which invalidates the pool ...
        with pytest.raises(exc.DBAPIError) as failed, engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert failed.value.connection_invalidated
        # ... and the next checkout connects afresh.
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != first
    finally:
        engine.dispose()
