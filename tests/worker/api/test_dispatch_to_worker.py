"""The API enqueues; a worker in another process sends: nothing but Redis between them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.e2e import email_payload
from tests.worker.api.conftest import Served


def test_execute_now_over_http_is_sent_by_a_worker_process(api: Served, smtp_server):
    env = {**os.environ, "DATABASE_URL": api.app.settings.database_url, "BROKER_URL": api.app.settings.broker_url,
           "SMTP_URL": smtp_server.url, "LOG_FORMAT": "json"}
    worker = subprocess.Popen([sys.executable, "-c", "from worker.cli.main import main; main()", "worker",
                               "--threads", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        created = api.client.post("/campaigns", json=email_payload())  # execute_now, no scheduler running
        assert created.status_code == 201, created.text
        deadline, shown = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            shown = api.client.get(f"/campaigns/{created.json()['id']}").json()
            if shown["status"] == "completed":
                break
            time.sleep(0.2)
        assert shown["status"] == "completed", shown
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, worker.stderr.read()[-2000:]
    recipients = sorted(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert recipients == sorted(f"person{i}@example.com" for i in range(6))  # each once
    assert shown["progress"] == {"total": 6, "sent": 6, "failed": 0, "skipped": 0, "pending": 0}


def test_api_command_with_two_worker_processes(api: Served):
    """`campaign-dispatch api --workers 2` as an operator starts it: both processes answer, SIGTERM stops them."""
    from tests.e2e import api_client
    from tests.smtpserver import free_port

    port = free_port()
    env = {**os.environ, "DATABASE_URL": api.app.settings.database_url, "BROKER_URL": api.app.settings.broker_url,
           "LOG_FORMAT": "json"}
    server = subprocess.Popen([sys.executable, "-c", "from worker.cli.main import main; main()", "api",
                               "--port", str(port), "--workers", "2"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        client = api_client(port, api.token, server)
        created = client.post("/campaigns", json=email_payload(execute_now=False, send_at="2099-01-01 00:00:00"))
        assert created.status_code == 201, created.text
        assert all(client.get(f"/campaigns/{created.json()['id']}").status_code == 200 for _ in range(20))
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0, server.stderr.read()[-2000:]
