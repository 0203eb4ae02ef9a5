"""What an operator sees and is told: `status` while a campaign sends, `health`, the progress log
line, and configuration checked before anything starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from scheduler.jobs import report_progress
from storage.timefmt import now
from tests.cli import CliRunner
from tests.e2e import bundle, contact, email_payload, in_process_worker, load, make_app
from tests.smtpserver import SmtpTestServer
from tests.worker.test_brakes import SlowSmtp, _wait
from worker.pipeline import campaign_service

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from worker.cli.main import main; main()"]


def _sent(app, campaign_id: str) -> int:
    from storage.campaigns import progress_of_many

    with app.sessions() as session:
        return progress_of_many(session, [campaign_id])[campaign_id]["sent"]


def test_status_while_sending_shows_workers_rate_eta_and_why_recipients_were_skipped(
        pg_db, redis_url, monkeypatch, capsys):
    with SlowSmtp() as server:
        app = make_app(pg_db, redis_url, server.url, delivery_batch_size=10, smtp_pool_size=2)
        load(app, bundle([contact(i) for i in range(120)] + [contact(200 + i, consent_email=False) for i in range(4)]))
        with app.sessions.begin() as session:
            campaign_id = campaign_service.create(session, email_payload(), 1).id
        with in_process_worker(app, threads=2) as actors:
            actors.enqueue_dispatch(campaign_id)
            _wait(lambda: _sent(app, campaign_id) >= 10, what="the campaign to get going")
            report_progress(app.sessions, now() - timedelta(seconds=10))  # as if sampled 10 s ago
            time.sleep(0.5)
            cli = CliRunner(monkeypatch, capsys, DATABASE_URL=pg_db, BROKER_URL=redis_url, COLUMNS="250")
            result = cli("status", "--json")
            table = cli("status")
        app.close()
    assert result.code == 0, result.err
    report = result.json
    assert len(report["workers"]) == 1 and report["workers"][0]["pid"] == os.getpid()
    assert {q["queue"] for q in report["queues"]} >= {"delivery"}
    (flying,) = [c for c in report["campaigns"] if c["id"] == campaign_id]
    assert flying["status"] == "sending" and flying["progress"]["total"] == 124
    assert flying["skip_reasons"] == {"no_consent": 4}
    assert flying["rate"] > 0 and flying["eta_seconds"] > 0 and flying["elapsed_seconds"] >= 0
    assert flying["retries_waiting"] == 0 and flying["last_error"] is None
    assert table.code == 0 and campaign_id in table.out and "no_consent 4" in table.out


def test_the_scheduler_logs_one_progress_line_per_campaign_and_no_routine_tick_lines(pg_db, redis_url, capsys):
    from storage.filters import parse_filters
    from storage.ledger import insert_recipients
    from storage.models import Campaign
    from worker.pipeline.roles import scheduler_for
    from worker.runtime.logging import configure_logging

    with SmtpTestServer() as server:
        app = make_app(pg_db, redis_url, server.url)
        load(app, bundle([contact(i) for i in range(5)]))
        with app.sessions.begin() as session:
            campaign_id = campaign_service.create(session, email_payload(), 1).id
        with app.sessions.begin() as session:  # as a dispatch leaves it: sending, fanned out (no worker runs)
            campaign = session.get(Campaign, campaign_id)
            insert_recipients(session, campaign, parse_filters(campaign.filter), now())
            campaign.status, campaign.dispatched_at = "sending", now()
        configure_logging("json", "INFO")
        capsys.readouterr()
        scheduler = scheduler_for(app, blocking=False, interval=0.3)
        scheduler.start()
        time.sleep(1.5)  # five ticks
        scheduler.shutdown()
        lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
        app.close()
    progress = [x for x in lines if x["event"] == "campaign.progress"]
    assert len(progress) == 1 and progress[0]["campaign_id"] == campaign_id  # one per 10 s, not per tick
    assert set(progress[0]) >= {"sent", "failed", "skipped", "pending", "rate", "eta_seconds"}
    assert [x["event"] for x in lines if x["event"] != "campaign.progress"] == [], lines


def test_health_says_what_to_do_for_each_dependency(pg_db, redis_url, tmp_path, monkeypatch, capsys):
    with SmtpTestServer(credentials=("mailer", "right")) as server:
        good = dict(DATABASE_URL=pg_db, BROKER_URL=redis_url, SMTP_URL=server.url,
                    STORAGE_URL=f"file://{tmp_path}/objects")
        result = CliRunner(monkeypatch, capsys, **good)("health")
        assert result.code == 0, result.out
        assert result.out.splitlines() == ["database: ok", "broker: ok", "smtp: ok", "storage: ok"]
        wrong = server.url.replace("mailer:right@", "mailer:wrong@")
        result = CliRunner(monkeypatch, capsys, **{**good, "SMTP_URL": wrong})("health")
        assert result.code == 1 and "smtp: the SMTP server" in result.out and "refused our login" in result.out
        assert "wrong" not in result.out  # never the password
    unmigrated = f"sqlite:///{tmp_path}/empty.db"
    result = CliRunner(monkeypatch, capsys, **{**good, "DATABASE_URL": unmigrated, "BROKER_URL": "redis://127.0.0.1:1/0"})(
        "health")
    assert result.code == 1
    assert "database: the database has no schema: run `campaign-dispatch db upgrade`" in result.out
    assert "broker: cannot reach Redis at 127.0.0.1:1" in result.out and "BROKER_URL" in result.out


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "BROKER_URL", "SMTP_URL"}}
    environment.update(env, LOG_FORMAT="json")
    return subprocess.run([*CLI, *args], cwd=env.get("CWD", ROOT), env=environment, capture_output=True, text=True,
                          timeout=60)


def test_a_malformed_variable_exits_2_naming_it_before_anything_happens(tmp_path):
    cases = {
        "DATABASE_URL": "foo://bar", "BROKER_URL": "foo://x", "SMTP_URL": "http://x", "STORAGE_URL": "ftp://x",
        "SCHEDULER_INTERVAL": "soon", "SEND_RATE": "-1", "METRICS_PORT": "http",
    }
    for variable, value in cases.items():
        result = _run("status", **{variable: value})
        assert result.returncode == 2, (variable, result.stdout, result.stderr)
        assert variable in json.loads(result.stdout)["errors"], result.stdout
        assert "Traceback" not in result.stderr
    missing = tmp_path / "nonexistent" / "dir"
    result = _run("status", DATABASE_URL=f"sqlite:///{missing}/x.db")
    assert result.returncode == 2 and "DATABASE_URL" in json.loads(result.stdout)["errors"]
    assert not missing.parent.exists()  # nothing created that the user did not ask for


def test_a_worker_whose_broker_cannot_be_reached_exits_1_saying_what_to_fix(pg_db):
    result = _run("worker", DATABASE_URL=pg_db, BROKER_URL="redis://127.0.0.1:1/0")
    assert result.returncode == 1
    assert "error: broker: cannot reach Redis at 127.0.0.1:1" in result.stderr and "BROKER_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_serves_metrics_and_health_on_metrics_port(pg_db, redis_url, smtp_server):
    import signal
    import urllib.request

    from tests.smtpserver import free_port

    port = free_port()
    environment = {**os.environ, "DATABASE_URL": pg_db, "BROKER_URL": redis_url, "SMTP_URL": smtp_server.url,
                   "METRICS_PORT": str(port), "LOG_FORMAT": "json"}
    worker = subprocess.Popen([*CLI, "worker", "--threads", "1"], env=environment, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        deadline, health = time.monotonic() + 30, None
        while time.monotonic() < deadline and health is None:
            try:
                health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            except OSError:
                assert worker.poll() is None, worker.stderr.read()[-2000:]
                time.sleep(0.2)
        assert health is not None and health.status == 200
        assert b"database: ok" in health.read()
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'campaign_dispatch_recipients_total{channel="email",outcome="sent"}' in text
        assert 'campaign_dispatch_queue_messages{queue="delivery",state="ready"}' in text
        from worker.pipeline.presence import workers_alive

        while time.monotonic() < deadline and not workers_alive(redis_url):  # consuming: stops cleanly
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, worker.stderr.read()[-2000:]


def test_a_command_on_a_database_without_schema_says_to_run_db_upgrade(tmp_path, redis_url):
    empty = f"sqlite:///{tmp_path}/empty.db"
    for args in (("campaigns", "list"), ("settings", "show")):
        result = _run(*args, DATABASE_URL=empty)
        assert result.returncode == 1, result.stderr
        assert "run `campaign-dispatch db upgrade`" in result.stderr and "SELECT" not in result.stderr
    result = _run("api", "--port", "0", DATABASE_URL=empty, BROKER_URL=redis_url)
    assert result.returncode == 1
    assert "error: database: the database has no schema: run `campaign-dispatch db upgrade`" in result.stderr
