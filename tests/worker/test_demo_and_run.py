"""The README's first command (`demo`) and the one-machine `run` mode, as a user runs them."""

from __future__ import annotations

import json
import mailbox
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

CLI = [sys.executable, "-c", "from worker.cli.main import main; main()"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "BROKER_URL", "SMTP_URL", "STORAGE_URL")}
    env.update(LOG_FORMAT="json", **extra)
    return env


def test_demo_on_the_embedded_default(tmp_path):
    result = subprocess.run([*CLI, "demo"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    email, letter, telephone = summary["campaigns"]
    assert [c["type"] for c in summary["campaigns"]] == ["email", "letter", "telephone"]
    assert {c["status"] for c in summary["campaigns"]} == {"completed"}
    zip_path = letter["letters_zip"][len("file://"):]
    with zipfile.ZipFile(zip_path) as archive:
        assert len(archive.namelist()) == letter["progress"]["sent"] > 0
    tasks = telephone["tasks_per_user"]
    assert sum(tasks.values()) == telephone["progress"]["sent"] and max(tasks.values()) - min(tasks.values()) <= 1
    progress = email["progress"]
    assert progress["sent"] > 0 and progress["skipped"] > 0 and progress["pending"] == 0
    assert progress["total"] == progress["sent"] + progress["skipped"] + progress["failed"]
    maildir = mailbox.Maildir(summary["mail"]["maildir"], create=False)
    # every email, plus the letter campaign's "letters are ready" note to its owner
    assert len(maildir) == progress["sent"] + 1 == summary["mail"]["messages_in_maildir"]
    assert Path(summary["mail"]["maildir"]).is_relative_to(tmp_path)
    assert (tmp_path / "var" / "campaign-dispatch.db").exists()


def test_run_sends_a_campaign_created_through_the_cli(tmp_path):
    env = _env(SCHEDULER_INTERVAL="0.3")
    subprocess.run([*CLI, "db", "upgrade"], cwd=tmp_path, env=env, check=True, capture_output=True)
    from worker.cli.demo import demo_bundle, email_payload

    (tmp_path / "bundle.json").write_text(json.dumps(demo_bundle(contacts=12)))
    (tmp_path / "campaign.json").write_text(json.dumps(email_payload()))
    subprocess.run([*CLI, "load", "bundle.json"], cwd=tmp_path, env=env, check=True, capture_output=True)
    created = subprocess.run([*CLI, "campaigns", "create", "campaign.json", "--user", "1"], cwd=tmp_path, env=env,
                             check=True, capture_output=True, text=True)
    campaign_id = json.loads(created.stdout)["id"]
    service = subprocess.Popen([*CLI, "run", "--threads", "2", "--no-api"], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:
            shown = subprocess.run([*CLI, "campaigns", "show", campaign_id], cwd=tmp_path, env=env,
                                   capture_output=True, text=True)
            status = json.loads(shown.stdout)["status"]
            if status == "completed":
                break
            time.sleep(0.5)
        assert status == "completed"
    finally:
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
    assert len(mailbox.Maildir(tmp_path / "var" / "mail", create=False)) > 0


def test_run_serves_the_api_and_sends_what_it_creates(tmp_path):
    """One process on the embedded default answers HTTP and sends: the seed's create, then show."""
    from tests.e2e import api_client
    from tests.smtpserver import free_port

    env = _env(SCHEDULER_INTERVAL="0.3")
    subprocess.run([*CLI, "db", "upgrade"], cwd=tmp_path, env=env, check=True, capture_output=True)
    from worker.cli.demo import demo_bundle, email_payload

    (tmp_path / "bundle.json").write_text(json.dumps(demo_bundle(contacts=12)))
    subprocess.run([*CLI, "load", "bundle.json"], cwd=tmp_path, env=env, check=True, capture_output=True)
    token = json.loads(subprocess.run([*CLI, "tokens", "create", "--user", "1"], cwd=tmp_path, env=env, check=True,
                                      capture_output=True, text=True).stdout)["token"]
    port = free_port()
    service = subprocess.Popen([*CLI, "run", "--threads", "2", "--api-port", str(port)], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        client = api_client(port, token, service)
        created = client.post("/campaigns", json=email_payload())  # execute_now
        assert created.status_code == 201, created.text
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline and status != "completed":
            status = client.get(f"/campaigns/{created.json()['id']}").json()["status"]
            time.sleep(0.3)
        assert status == "completed"
        sent = client.get(f"/campaigns/{created.json()['id']}").json()["progress"]["sent"]
        # a second `run` on the same port is refused, naming the option
        busy = subprocess.run([*CLI, "run", "--api-port", str(port)], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)
        assert busy.returncode == 2 and "--api-port" in json.loads(busy.stdout)["errors"]
    finally:
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0, service.stderr.read()[-2000:]
    assert len(mailbox.Maildir(tmp_path / "var" / "mail", create=False)) == sent > 0
