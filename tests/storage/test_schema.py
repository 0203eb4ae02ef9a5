"""The Alembic migrations build exactly the models' schema on both databases."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from storage.db import make_engine

from storage.migrate import current_revision, upgrade
from storage.models import Base


def test_migrations_match_models(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent(engine):
    first = current_revision(engine)
    assert first is not None
    assert upgrade(engine) == first


def test_campaigns_closed_before_0003_count_as_finalised(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0002")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id) VALUES (1)"))
        for n, status in enumerate(("completed", "cancelled", "sending", "draft")):
            conn.execute(text("INSERT INTO campaigns (id, user_id, scope, name, approved, type, status, total, sent,"
                              " failed, skipped, created_at, updated_at) VALUES (:id, 1, 'global', 'c', 1, 'email',"
                              " :status, 0, 0, 0, 0, :at, :at)"),
                         {"id": f"c{n}", "status": status, "at": "2026-01-02 03:04:05.000000"})
    assert upgrade(engine) == current_revision(engine)
    with engine.connect() as conn:
        finalised = dict(conn.execute(text("SELECT status, finalised_at FROM campaigns")).all())
    engine.dispose()
    assert finalised["completed"] and finalised["cancelled"]  # not settled again: no surprise tasks or ZIPs
    assert finalised["sending"] is None and finalised["draft"] is None
