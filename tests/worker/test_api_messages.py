"""What the API relies on: raw Dramatiq messages as the README documents them, and the CLI's actions."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from email import policy
from email.parser import BytesParser

import redis

from tests.cli import CliRunner
from tests.e2e import bundle, contact, drive, email_payload, in_process_worker, load, make_app
from worker.pipeline import campaign_service


def enqueue_raw(redis_url: str, queue: str, actor: str, args: list, kwargs: dict | None = None) -> None:
    """Exactly the README's recipe, with plain Redis commands (what a producer in any language does)."""
    rid = str(uuid.uuid4())
    message = {"queue_name": queue, "actor_name": actor, "args": args, "kwargs": kwargs or {},
               "options": {"redis_message_id": rid}, "message_id": str(uuid.uuid4()),
               "message_timestamp": int(time.time() * 1000)}
    client = redis.Redis.from_url(redis_url)
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(f"dramatiq:{queue}.msgs", rid, json.dumps(message))
        pipe.rpush(f"dramatiq:{queue}", rid)
        pipe.execute()
    client.close()


def _wait(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_raw_dispatch_message_sends_the_campaign(pg_db, redis_url, smtp_server):
    app = make_app(pg_db, redis_url, smtp_server.url)
    load(app, bundle([contact(i) for i in range(4)]))
    payload = email_payload(execute_now=False, send_at="2099-01-01 00:00:00")  # not due: only the message sends it
    with app.sessions.begin() as session:
        campaign_id = campaign_service.create(session, payload, 1).id
    with in_process_worker(app) as actors:
        enqueue_raw(redis_url, "campaigns", "dispatch_campaign", [campaign_id])
        _wait(lambda: len(smtp_server.messages) == 4)
        assert drive(app, campaign_id) == "completed"
    assert len(smtp_server.messages) == 4


def test_raw_test_email_message_with_payload(pg_db, redis_url, smtp_server):
    app = make_app(pg_db, redis_url, smtp_server.url)
    load(app, bundle([contact(1)]))
    with in_process_worker(app):
        enqueue_raw(redis_url, "default", "send_test_email", ["qa@example.com"],
                    {"payload": email_payload(send_at=None)})
        _wait(lambda: len(smtp_server.messages) == 1)
    received = smtp_server.messages[0]
    assert received.rcpt_tos == ("qa@example.com",)
    assert BytesParser(policy=policy.default).parsebytes(received.data)["Subject"] == "[TEST] Hi"  # sample contact: no name


def test_cli_send_messages_status_and_test_email(pg_db, redis_url, smtp_server, monkeypatch, capsys, tmp_path):
    app = make_app(pg_db, redis_url, smtp_server.url)
    load(app, bundle([contact(i) for i in range(3)]))
    payload = email_payload(execute_now=False, send_at="2099-01-01 00:00:00")
    with app.sessions.begin() as session:
        campaign_id = campaign_service.create(session, payload, 1).id
    cli = CliRunner(monkeypatch, capsys, DATABASE_URL=pg_db, BROKER_URL=redis_url, SMTP_URL=smtp_server.url)

    sent = cli("campaigns", "send", campaign_id)
    assert sent.code == 0, sent.out + sent.err
    queued = cli("status", "--json").json
    assert {q["queue"]: q["ready"] for q in queued["queues"]}["campaigns"] == 1
    with in_process_worker(app) as actors:
        assert drive(app, campaign_id) == "completed"

    shown = cli("campaigns", "show", campaign_id).json
    assert shown["status"] == "completed" and shown["progress"]["sent"] == 3 and shown["total_sent"] == 3
    assert cli("campaigns", "send", campaign_id).code == 4
    listing = cli("campaigns", "messages", campaign_id).json
    assert listing["pagination"]["total"] == 3
    one = cli("campaigns", "messages", campaign_id, str(listing["data"][0]["id"])).json
    assert one["campaign_id"] == campaign_id and "Dear Person" in one["content"]
    assert cli("campaigns", "messages", campaign_id, "999999").code == 3
    recipients = cli("campaigns", "recipients", campaign_id).json["data"]
    assert {r["delivery"]["status"] for r in recipients} == {"sent"}

    # memory:// runs a test email in the command itself
    payload_file = tmp_path / "p.json"
    payload_file.write_text(json.dumps(email_payload()))
    cli_mem = CliRunner(monkeypatch, capsys, BROKER_URL="memory://")
    result = cli_mem("campaigns", "test-email", "--payload", str(payload_file), "qa@example.com")
    assert result.code == 0 and result.json == {"email": "qa@example.com"}
    assert smtp_server.delivered_to("qa@example.com")
    bad = cli_mem("campaigns", "test-email", campaign_id, "not-an-address")
    assert bad.code == 2 and "email" in bad.json["errors"]


def test_preview_is_stored_and_served(pg_db, redis_url, monkeypatch, capsys, tmp_path, s3_env, s3_bucket):
    app = make_app(pg_db, redis_url, None)
    load(app, bundle([contact(1, first_name="Zoë")]))
    with app.sessions.begin() as session:
        campaign_id = campaign_service.create(session, email_payload(), 1).id

    local = CliRunner(monkeypatch, capsys, DATABASE_URL=pg_db, STORAGE_URL=f"file://{tmp_path}/objects")
    url = local("campaigns", "preview", campaign_id).json["download_url"]
    assert url.startswith("file://") and "Dear Zoë" in open(url[len("file://"):], encoding="utf-8").read()

    s3 = CliRunner(monkeypatch, capsys, DATABASE_URL=pg_db, STORAGE_URL=f"s3://{s3_bucket}/previews")
    url = s3("campaigns", "preview", campaign_id).json["download_url"]
    assert "X-Amz-Expires=300" in url
    with urllib.request.urlopen(url) as response:
        assert "Dear Zoë" in response.read().decode("utf-8")
