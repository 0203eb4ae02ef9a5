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


def _campaign_0006(conn, campaign_id: str, contacts: list[str]) -> None:
    at = {"at": "2026-01-02 03:04:05.000000"}
    conn.execute(text("INSERT INTO campaigns (id, user_id, scope, name, approved, type, status, total, sent,"
                      " failed, skipped, created_at, updated_at) VALUES (:id, 1, 'global', 'c', TRUE, 'email',"
                      " 'completed', 0, 0, 0, 0, :at, :at)"), {"id": campaign_id, **at})
    for contact in contacts:
        conn.execute(text("INSERT INTO recipients (campaign_id, contact_id, status, attempts, created_at, updated_at)"
                          " VALUES (:c, :k, 'sent', 1, :at, :at)"), {"c": campaign_id, "k": contact, **at})


def test_0007_moves_archived_messages_into_the_ledger_and_back(db_url):
    from alembic import command
    from sqlalchemy.orm import Session

    from storage.campaign_messages import list_messages
    from storage.migrate import alembic_config

    engine = make_engine(db_url)
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))

    def downgrade() -> None:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0006")

    sent = {"k1": "<p>Hello Søren</p>", "k2": "<p>Hello Zoë</p>" * 50}
    try:
        downgrade()  # the fixture's database is at head: start again from 0006
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO users (id) VALUES (1)"))
            _campaign_0006(conn, "c1", ["k1", "k2", "k3"])
            for contact, content in sent.items():
                conn.execute(text("INSERT INTO campaign_messages (campaign_id, contact_id, content, created_at,"
                                  " updated_at) VALUES ('c1', :k, :t, :at, :at)"),
                             {"k": contact, "t": content, "at": "2026-01-02 03:04:05.000000"})
        upgrade(engine)
        with Session(engine) as session:
            messages, total = list_messages(session, "c1", page=1, per_page=10)
        assert total == 2 and {m["contact_id"]: m["content"] for m in messages} == sent
        downgrade()
        with engine.connect() as conn:
            back = dict(conn.execute(text("SELECT contact_id, content FROM campaign_messages")).all())
            ledger = conn.execute(text("SELECT count(*) FROM recipients")).scalar()
        assert back == sent and ledger == 3
    finally:
        upgrade(engine)  # at head again for the tests after this one
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM campaigns"))
            conn.execute(text("DELETE FROM users"))
        engine.dispose()


def test_0007_refuses_to_drop_a_message_with_no_ledger_row(tmp_path):
    import pytest

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0006")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id) VALUES (1)"))
        _campaign_0006(conn, "c1", [])
        conn.execute(text("INSERT INTO campaign_messages (campaign_id, contact_id, content, created_at, updated_at)"
                          " VALUES ('c1', 'nobody', 'kept', :at, :at)"), {"at": "2026-01-02 03:04:05.000000"})
    with pytest.raises(RuntimeError, match="1 archived messages have no ledger row"):
        upgrade(engine)
    with engine.connect() as conn:  # nothing was changed: the message is still there, at 0006
        assert conn.execute(text("SELECT content FROM campaign_messages")).scalar() == "kept"
    assert current_revision(engine) == "0006"
    engine.dispose()


def test_downgrading_to_the_first_revision_keeps_every_campaign_and_ledger_row(tmp_path):
    from alembic import command

    from storage.migrate import alembic_config

    engine = make_engine(f"sqlite:///{tmp_path / 'new.db'}")
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id) VALUES (1)"))
        _campaign_0006(conn, "c1", ["k1", "k2"])
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM campaigns")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM recipients")).scalar() == 2
    engine.dispose()
