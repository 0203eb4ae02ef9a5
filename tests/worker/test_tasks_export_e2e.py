"""Telephone campaigns and follow-up tasks (round-robin from the ledger), and the XLSX export."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid

import openpyxl
from sqlalchemy import func, select, update

from storage.models import Campaign, Recipient, Task
from storage.timefmt import now
from tests.cli import CliRunner
from tests.e2e import bundle, contact, drive, email_payload, in_process_worker, load, make_app
from tests.seed_payloads import RELATIONS_PATH, future
from worker.pipeline import campaign_service
from worker.pipeline.roles import tick


def phone_bundle(n: int):
    contacts = [contact(i, mobile_phone_number=None if i % 10 == 0 else f"+45{20000000 + i}") for i in range(n)]
    for c in contacts[:8]:
        c["consent"]["call"] = {"consent_given": False, "updated_at": ""}
    data = bundle(contacts)
    data["users"] += [{"id": uid, "first_name": f"Agent{uid}", "last_name": "X", "email": f"a{uid}@acme.example",
                       "team_id": 1} for uid in (4, 10, 34)]
    return data


def task(strategy: str, users: list[int]) -> dict:
    return {"distribution_strategy": strategy, "distribute_users": users, "relations_path": RELATIONS_PATH,
            "start_at": future(days=1), "end_at": future(days=2)}


def phone_payload(strategy="distribute", users=(34, 4, 10)):
    return {"name": "Call round", "type": "telephone", "approved": True, "execute_now": True,
            "filter": [{"field": "contact.fixed_fields.last_name", "operator": "eq", "value": "Larsen"}],
            "task": task(strategy, list(users))}


def test_distribute_is_fair_across_two_worker_processes(pg_db, redis_url):
    app = make_app(pg_db, redis_url, None, delivery_batch_size=7)
    load(app, phone_bundle(200))
    with app.sessions.begin() as session:
        campaign_id = campaign_service.create(session, phone_payload(), 1).id
    env = {**os.environ, "DATABASE_URL": pg_db, "BROKER_URL": redis_url, "DELIVERY_BATCH_SIZE": "7",
           "LOG_FORMAT": "json"}
    env.pop("SMTP_URL", None)
    workers = subprocess.Popen([sys.executable, "-c", "from worker.cli.main import main; main()", "worker",
                                "--processes", "2", "--threads", "4"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    actors = app.actors
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            tick(app)
            with app.sessions() as session:
                if session.scalar(select(func.count()).where(Task.campaign_id == campaign_id)):
                    break
            time.sleep(0.2)
        # a delivery message delivered twice (a duplicate from the broker) changes nothing
        actors.deliver_batch.send(campaign_id, 1, 10**9)
        time.sleep(1.0)
    finally:
        workers.send_signal(signal.SIGTERM)
        workers.wait(timeout=60)
        app.close()

    with app.sessions() as session:
        reached = session.scalar(select(func.count()).where(Recipient.campaign_id == campaign_id,
                                                             Recipient.status == "sent"))
        skipped = dict(session.execute(select(Recipient.reason, func.count()).where(
            Recipient.campaign_id == campaign_id, Recipient.status == "skipped").group_by(Recipient.reason)).all())
        tasks = session.scalars(select(Task).where(Task.campaign_id == campaign_id)).all()
    # contacts 0-7 refused calls; every tenth has no phone (0 counts as no consent first)
    assert skipped == {"no_consent": 8, "no_phone": 19}
    assert reached == 200 - 8 - 19 and len(tasks) == reached
    assert len({t.contact_id for t in tasks}) == len(tasks)  # one task per recipient
    counts = collections.Counter(t.user_id for t in tasks)
    assert set(counts) == {34, 4, 10} and max(counts.values()) - min(counts.values()) <= 1
    ordered = sorted(tasks, key=lambda t: t.id)
    assert [t.user_id for t in ordered[:6]] == [34, 4, 10, 34, 4, 10]  # round-robin in the given order
    assert all(t.relations_path == RELATIONS_PATH and t.start_at < t.end_at for t in tasks)


def test_responsible_user_and_follow_up_tasks_of_an_email_campaign(pg_db, redis_url, smtp_server, monkeypatch, capsys):
    app = make_app(pg_db, redis_url, smtp_server.url)
    load(app, phone_bundle(12))
    payload = email_payload(task=task("responsible_user", [2, 4]))
    with app.sessions.begin() as session:
        campaign_id = campaign_service.create(session, payload, 1).id
    with in_process_worker(app) as actors:
        assert drive(app, campaign_id) == "completed"
    cli = CliRunner(monkeypatch, capsys, DATABASE_URL=pg_db)
    listed = cli("campaigns", "tasks", campaign_id).json["data"]
    assert len(listed) == len(smtp_server.messages) == 12
    for item in listed:
        own = 1 + uuid.UUID(item["contact"]["id"]).int % 2  # the test contacts' own users: 1 or 2
        if own == 2:
            assert item["user"]["id"] == 2  # their responsible user is listed: the task is theirs
    others = [item["user"]["id"] for item in listed if 1 + uuid.UUID(item["contact"]["id"]).int % 2 == 1]
    counts = collections.Counter(others)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert listed[0]["relations_path"] == RELATIONS_PATH and listed[0]["start_at"] and listed[0]["end_at"]


def test_unknown_distribute_user_is_refused(pg_db, redis_url, tmp_path, monkeypatch, capsys):
    app = make_app(pg_db, redis_url, None)
    load(app, phone_bundle(1))
    path = tmp_path / "p.json"
    import json

    path.write_text(json.dumps(phone_payload(users=(4, 999))))
    result = CliRunner(monkeypatch, capsys, DATABASE_URL=pg_db)("campaigns", "create", str(path), "--user", "1")
    assert result.code == 2 and "task.distribute_users.1" in result.json["errors"]


def test_export_rows_equal_the_recipients_listing(pg_db, redis_url, smtp_server, monkeypatch, capsys, tmp_path):
    app = make_app(pg_db, redis_url, smtp_server.url, storage_url=f"file://{tmp_path}/objects")
    contacts = [contact(i, first_name=f"=HYPERLINK(\"http://x\",\"{i}\")" if i == 3 else None) for i in range(30)]
    contacts.append(contact(99, consent_email=False))
    load(app, bundle(contacts))
    with app.sessions.begin() as session:
        campaign_id = campaign_service.create(session, email_payload(), 1).id
    with in_process_worker(app) as actors:
        assert drive(app, campaign_id) == "completed"

        cli = CliRunner(monkeypatch, capsys, DATABASE_URL=pg_db, BROKER_URL=redis_url,
                        STORAGE_URL=f"file://{tmp_path}/objects")
        started = cli("campaigns", "export", campaign_id).json
        assert started["status"] == "pending" and started["file_id"] is None
        deadline = time.monotonic() + 30
        while (status := cli("campaigns", "export-status", campaign_id, started["export_id"]).json)["status"] == "pending":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert status["status"] == "done" and status["file_id"]
    url = cli("files", "url", status["file_id"]).json["url"]
    sheet = openpyxl.load_workbook(urllib.parse.unquote(url[len("file://"):]), read_only=True).active
    rows = list(sheet.iter_rows(values_only=True))
    header, body = rows[0], rows[1:]
    assert header[0] == "Contact ID" and "Last name" in header and "Email consent" in header
    assert header[-3:] == ("Delivery status", "Delivery reason", "Delivery at")

    listing = cli("campaigns", "recipients", campaign_id, "--per-page", "500").json["data"]
    assert [r[0] for r in body] == [item["id"] for item in listing]
    status_col = header.index("Delivery status")
    assert [r[status_col] for r in body] == [item["delivery"]["status"] for item in listing]
    first_name_col = header.index("First name")
    assert any(r[first_name_col] == '=HYPERLINK("http://x","3")' for r in body)  # text, not a formula
    assert cli("files", "url", str(uuid.uuid4())).code == 3
    assert cli("campaigns", "export-status", campaign_id, str(uuid.uuid4())).code == 3


def test_a_cancelled_campaign_deals_tasks_for_the_recipients_delivered_before(pg_db, redis_url, monkeypatch, capsys):
    app = make_app(pg_db, redis_url, None)
    load(app, phone_bundle(20))
    with app.sessions.begin() as session:
        campaign_id = campaign_service.create(session, phone_payload(), 1).id
    with app.sessions.begin() as session:  # fanned out; six recipients delivered, then the campaign cancelled
        session.execute(update(Campaign).where(Campaign.id == campaign_id)
                        .values(status="sending", dispatched_at=now(), progress_at=now()))
        contacts = [contact(i)["id"] for i in range(10, 20)]
        session.add_all(Recipient(campaign_id=campaign_id, contact_id=cid, status="sent" if n < 6 else "pending")
                        for n, cid in enumerate(contacts))
    cli = CliRunner(monkeypatch, capsys, DATABASE_URL=pg_db, BROKER_URL=redis_url)
    assert cli("campaigns", "cancel", campaign_id).code == 0
    with in_process_worker(app) as actors:
        tick(app)
    listed = cli("campaigns", "tasks", campaign_id).json["data"]
    assert sorted(item["contact"]["id"] for item in listed) == sorted(contacts[:6])
    shown = cli("campaigns", "show", campaign_id).json
    assert shown["status"] == "cancelled" and shown["total_sent"] == 6
    assert shown["progress"] == {"total": 10, "sent": 6, "failed": 0, "skipped": 4, "pending": 0}
