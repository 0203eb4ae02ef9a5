"""Shared fixtures: real PostgreSQL and SQLite databases, a real Redis, each test's data isolated."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from storage.db import make_engine, make_sessionmaker, safe_identifier
from storage.migrate import upgrade
from storage.models import Base

pytest_plugins = ["tests.s3server", "tests.smtpserver"]

# Where the test PostgreSQL server is; each test session creates (and drops) its own database there.
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session (UTF-8, C.UTF-8 ctype)."""
    name = safe_identifier(f"cd_test_{os.getpid()}_{uuid.uuid4().hex[:8]}")
    admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(
            f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' "
            "LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"
        ))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def _truncate(engine: Engine) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A migrated SQLite file of this test's own."""
    url = f"sqlite:///{tmp_path / 'test.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request) -> Iterator[str]:
    """Each storage test runs on SQLite and on the real PostgreSQL; the data is the test's own."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_url")
        return
    url = request.getfixturevalue("pg_url")
    yield url
    engine = make_engine(url)
    _truncate(engine)
    engine.dispose()


@pytest.fixture
def pg_db(pg_url) -> Iterator[str]:
    """The PostgreSQL test database, emptied after the test (end-to-end tests run on PostgreSQL)."""
    yield pg_url
    engine = make_engine(pg_url)
    _truncate(engine)
    engine.dispose()


@pytest.fixture
def engine(db_url) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real Redis database, flushed before and after the test."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()
