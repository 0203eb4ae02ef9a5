"""The letters ZIP is built from the batch parts the ledger names: each sent letter once, no other."""

from __future__ import annotations

import io
import time
import zipfile
from datetime import timedelta

import pytest
from sqlalchemy import select

from storage.models import Campaign, Recipient, StoredFile
from storage.objectstore import ObjectMissing
from storage.timefmt import now
from tests.cli import CliRunner
from tests.e2e import contact, drive, in_process_worker, load, make_app
from tests.worker.test_letters_e2e import letter_bundle, letter_payload
from worker.pipeline import campaign_service
from worker.channels.letters import pack_part, part_key
from worker.pipeline.archive import LetterMissing, build_archive
from worker.pipeline.roles import tick


def _campaign_with_ledger(app, rows):
    """A letter campaign whose ledger holds ``rows``: (contact index, status, artifact key or None)."""
    load(app, letter_bundle([contact(i, address=f"Street {i}", city="Aarhus") for i in range(4)]))
    with app.sessions.begin() as session:
        campaign_id = campaign_service.create(session, letter_payload(), 1).id
        session.get(Campaign, campaign_id).status = "sending"
        ids = []
        for i, status, key in rows:
            row = Recipient(campaign_id=campaign_id, contact_id=contact(i)["id"], status=status,
                            artifact_key=key(campaign_id) if key else None)
            session.add(row)
            session.flush()
            ids.append(row.id)
    return campaign_id, ids


def test_zip_takes_each_letter_from_the_part_its_row_names(db_url, tmp_path):
    app = make_app(db_url, "redis://127.0.0.1:6379/15", None, storage_url=tmp_path.as_uri())
    keys: dict[str, str] = {}

    def key_of(label):
        return lambda campaign_id: keys.setdefault(label, part_key(campaign_id, 1))

    campaign_id, ids = _campaign_with_ledger(app, [
        (0, "sent", key_of("first")), (1, "sent", key_of("first")), (2, "sent", key_of("retry")),
        (3, "failed", None)])
    store = app.store
    # row 2 was rendered twice: its row names the part of the attempt that marked it sent
    store.put_bytes(keys["first"], pack_part([(ids[0], b"%PDF-a"), (ids[1], b"%PDF-b")]), "application/zip")
    store.put_bytes(keys["retry"], pack_part([(ids[2], b"%PDF-c")]), "application/zip")
    orphan = part_key(campaign_id, ids[2])  # the attempt that crashed before marking: no row names it
    store.put_bytes(orphan, pack_part([(ids[2], b"%PDF-stale"), (ids[3], b"%PDF-failed")]), "application/zip")

    file_id = build_archive(app, campaign_id)

    with app.sessions() as session:
        zip_key = session.get(StoredFile, file_id).key
    archive = zipfile.ZipFile(io.BytesIO(store.get_bytes(zip_key)))
    contents = {name: archive.read(name) for name in archive.namelist()}
    assert sorted(contents.values()) == [b"%PDF-a", b"%PDF-b", b"%PDF-c"]
    for i, data in enumerate((b"%PDF-a", b"%PDF-b", b"%PDF-c")):
        (name,) = [n for n, d in contents.items() if d == data]
        assert contact(i)["id"] in name
    # once the ZIP is recorded the campaign's parts are gone, the one no row named too
    assert not any(store.exists(key) for key in (keys["first"], keys["retry"], orphan))
    assert store.exists(zip_key)
    assert build_archive(app, campaign_id) is None  # a second run leaves the ZIP alone


def test_a_sent_letter_without_a_part_stops_the_zip(db_url, tmp_path):
    app = make_app(db_url, "redis://127.0.0.1:6379/15", None, storage_url=tmp_path.as_uri())
    campaign_id, _ = _campaign_with_ledger(app, [(0, "sent", None)])
    with pytest.raises(LetterMissing, match="names no stored PDF"):
        build_archive(app, campaign_id)
    with app.sessions() as session:
        assert session.get(Campaign, campaign_id).letters_file_id is None


def test_a_zip_built_meanwhile_by_another_worker_wins(db_url, tmp_path):
    app = make_app(db_url, "redis://127.0.0.1:6379/15", None, storage_url=tmp_path.as_uri())
    keys: dict[str, str] = {}
    campaign_id, ids = _campaign_with_ledger(
        app, [(0, "sent", lambda cid: keys.setdefault("part", part_key(cid, 1)))])
    store = app.store
    store.put_bytes(keys["part"], pack_part([(ids[0], b"%PDF-a")]), "application/zip")
    theirs = build_archive(app, campaign_id)  # the other worker's ZIP, recorded; the parts deleted
    with app.sessions.begin() as session:  # as seen by a worker that started before it was recorded
        session.get(Campaign, campaign_id).letters_file_id = None
    read = store.get_bytes

    def parts_gone_meanwhile(key):
        if "/parts/" in key:
            with app.sessions.begin() as session:
                session.get(Campaign, campaign_id).letters_file_id = theirs
        return read(key)

    store.get_bytes = parts_gone_meanwhile
    assert build_archive(app, campaign_id) is None
    with app.sessions() as session:
        assert session.get(Campaign, campaign_id).letters_file_id == theirs
        assert session.query(StoredFile).count() == 1
    assert sorted(p.name for p in tmp_path.rglob("*.zip")) == [f"letters-{theirs}.zip"]


def test_a_missing_part_stops_the_zip_while_none_exists(db_url, tmp_path):
    app = make_app(db_url, "redis://127.0.0.1:6379/15", None, storage_url=tmp_path.as_uri())
    campaign_id, _ = _campaign_with_ledger(app, [(0, "sent", lambda cid: part_key(cid, 1))])
    with pytest.raises(ObjectMissing):
        build_archive(app, campaign_id)
    assert not list(tmp_path.rglob("*.zip"))


def test_letters_that_cannot_be_stored_are_retried_then_failed_with_the_reason(pg_db, redis_url, tmp_path,
                                                                                monkeypatch, capsys):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("the object store's root is a file: every write fails")
    app = make_app(pg_db, redis_url, None, storage_url=blocker.as_uri(), max_attempts=2,
                   retry_base_seconds=0.1)
    load(app, letter_bundle([contact(i, address=f"Street {i}", city="Aarhus") for i in range(3)]))
    with app.sessions.begin() as session:
        campaign_id = campaign_service.create(session, letter_payload(), 1).id
    with in_process_worker(app) as actors:
        status = drive(app, campaign_id)
    with app.sessions() as session:
        rows = session.scalars(select(Recipient).where(Recipient.campaign_id == campaign_id)).all()
        campaign = session.get(Campaign, campaign_id)
    assert status == "failed" and campaign.total_sent == 0
    assert len(rows) == 3 and {row.status for row in rows} == {"failed"}
    assert all(row.attempts == 2 and "storage:" in row.reason for row in rows)
    # no ZIP was waited for, and asking for one says why there is none
    cli = CliRunner(monkeypatch, capsys, DATABASE_URL=pg_db, STORAGE_URL=blocker.as_uri())
    answer = cli("campaigns", "letters", campaign_id)
    assert answer.code == 4 and answer.json["message"].endswith("is failed and has no letters ZIP: no letter was sent")


def test_a_letter_that_cannot_be_rendered_fails_its_recipient_only(pg_db, redis_url, tmp_path):
    app = make_app(pg_db, redis_url, None, storage_url=tmp_path.as_uri())
    load(app, letter_bundle([contact(i, address=f"Street {i}", city="Aarhus") for i in range(6)]))
    content = ("<p>Dear {{ contact.first_name }},</p>{% if contact.custom_fields.tier == 'gold' %}"
               "<p style='letter-spacing: 1e300px'>xy</p>{% endif %}")  # WeasyPrint gives up on these
    with app.sessions.begin() as session:
        campaign_id = campaign_service.create(session, letter_payload(message={"content": content}), 1).id
    with in_process_worker(app) as actors:
        assert drive(app, campaign_id) == "completed"
    with app.sessions() as session:
        rows = {r.contact_id: r for r in session.scalars(select(Recipient).where(Recipient.campaign_id == campaign_id))}
        zip_key = session.get(StoredFile, session.get(Campaign, campaign_id).letters_file_id).key
    for i in range(6):
        row = rows[contact(i)["id"]]
        if i % 2:  # gold
            assert row.status == "failed" and row.reason.startswith("letter: the PDF could not be laid out: ")
        else:
            assert row.status == "sent"
    names = zipfile.ZipFile(io.BytesIO(app.store.get_bytes(zip_key))).namelist()
    assert sorted(n for n in names if any(contact(i)["id"] in n for i in (0, 2, 4))) == sorted(names)
    assert len(names) == 3


def test_a_cancelled_letter_campaign_zips_the_letters_sent_before_the_cancel(pg_db, redis_url, tmp_path,
                                                                              monkeypatch, capsys):
    app = make_app(pg_db, redis_url, None, storage_url=tmp_path.as_uri(), lease_seconds=60)
    keys: dict[str, str] = {}
    campaign_id, ids = _campaign_with_ledger(app, [
        (0, "sent", lambda cid: keys.setdefault("part", part_key(cid, 1))), (1, "sent", lambda cid: keys["part"]),
        (2, "skipped", None), (3, "sending", None)])
    app.store.put_bytes(keys["part"], pack_part([(ids[0], b"%PDF-a"), (ids[1], b"%PDF-b")]), "application/zip")
    cli = CliRunner(monkeypatch, capsys, DATABASE_URL=pg_db, STORAGE_URL=tmp_path.as_uri())
    with app.sessions.begin() as session:
        campaign = session.get(Campaign, campaign_id)
        campaign.dispatched_at = now()
        campaign.status = "cancelled"
        # row 3 was taken by a worker that died: its lease ran out an hour ago
        session.get(Recipient, ids[3]).updated_at = now() - timedelta(hours=1)
    assert cli("campaigns", "letters", campaign_id).json["message"] == "letters are not ready yet"

    with in_process_worker(app) as actors:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tick(app)
            with app.sessions() as session:
                campaign = session.get(Campaign, campaign_id)
            if campaign.finalised_at is not None:
                break
            time.sleep(0.1)
    assert campaign.finalised_at is not None, "the cancelled campaign was never settled"
    assert (campaign.status, campaign.sent, campaign.skipped, campaign.total) == ("cancelled", 2, 2, 4)
    with app.sessions() as session:
        assert session.get(Recipient, ids[3]).reason == "cancelled"
        zip_key = session.get(StoredFile, campaign.letters_file_id).key
    archive = zipfile.ZipFile(io.BytesIO(app.store.get_bytes(zip_key)))
    assert sorted(archive.read(name) for name in archive.namelist()) == [b"%PDF-a", b"%PDF-b"]
    assert not app.store.exists(keys["part"])
    assert cli("campaigns", "letters", campaign_id).code == 0


def test_a_letter_campaign_cancelled_before_its_fan_out_says_it_has_no_letters(pg_db, monkeypatch, capsys, tmp_path):
    app = make_app(pg_db, "redis://127.0.0.1:6379/15", None, storage_url=tmp_path.as_uri())
    campaign_id, _ = _campaign_with_ledger(app, [])
    with app.sessions.begin() as session:
        session.get(Campaign, campaign_id).status = "cancelled"
    cli = CliRunner(monkeypatch, capsys, DATABASE_URL=pg_db, STORAGE_URL=tmp_path.as_uri())
    answer = cli("campaigns", "letters", campaign_id)
    assert answer.code == 4 and answer.json["message"].endswith("is cancelled and has no letters ZIP: no letter was sent")
