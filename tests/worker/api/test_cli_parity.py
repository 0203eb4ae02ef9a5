"""The CLI and the API are two doors onto one service: what one writes, the other reads the same."""

from __future__ import annotations

import json
import time

import pytest

from tests.cli import CliRunner
from tests.e2e import bundle, contact, drive, email_payload, in_process_worker, load, make_app
from tests.worker.api.conftest import Served, serve


@pytest.fixture
def doors(pg_db, redis_url, smtp_server, monkeypatch, capsys, tmp_path):
    app = make_app(pg_db, redis_url, smtp_server.url, storage_url=f"file://{tmp_path / 'objects'}")
    load(app, bundle([contact(i) for i in range(5)]))
    cli = CliRunner(monkeypatch, capsys, DATABASE_URL=pg_db, BROKER_URL=redis_url, SMTP_URL=smtp_server.url,
                    STORAGE_URL=f"file://{tmp_path / 'objects'}")
    try:
        for served in serve(app):
            yield served, cli
    finally:
        app.close()


def relative(document, base: str):
    """The API's absolute pagination URLs, as the CLI prints them (relative)."""
    return json.loads(json.dumps(document).replace(base, ""))


def same(served: Served, cli: CliRunner, path: str, *args: str, params: dict | None = None) -> dict:
    over_http = served.client.get(path, params=params)
    assert over_http.status_code == 200, over_http.text
    on_cli = cli(*args)
    assert on_cli.code == 0, on_cli.err
    assert relative(over_http.json(), served.url) == on_cli.json, path
    return on_cli.json


def test_every_resource_reads_the_same_through_both_doors(doors, tmp_path):
    served, cli = doors
    task = {"distribution_strategy": "distribute", "distribute_users": [1, 2],
            "relations_path": "9eae431b-3d0f-4528-9c59-e9d1a40fcd04",
            "start_at": "2099-01-01 00:00:00", "end_at": "2099-01-02 00:00:00"}
    # created over HTTP, sent by a worker taking the dispatch message from Redis
    created = served.client.post("/campaigns", json=email_payload(task=task))
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    with in_process_worker(served.app):
        assert drive(served.app, campaign_id) == "completed"

    shown = same(served, cli, f"/campaigns/{campaign_id}", "campaigns", "show", campaign_id)
    assert shown["progress"]["sent"] == 5
    same(served, cli, "/campaigns", "campaigns", "list", "--per-page", "1", params={"per_page": 1})
    same(served, cli, f"/campaigns/{campaign_id}/recipients", "campaigns", "recipients", campaign_id,
         "--per-page", "2", params={"per_page": 2})
    messages = same(served, cli, f"/campaigns/{campaign_id}/messages", "campaigns", "messages", campaign_id)
    first = messages["data"][0]["id"]
    same(served, cli, f"/campaigns/{campaign_id}/messages/{first}", "campaigns", "messages", campaign_id, str(first))
    tasks = same(served, cli, f"/campaigns/{campaign_id}/tasks", "campaigns", "tasks", campaign_id)
    assert len(tasks["data"]) == 5
    same(served, cli, "/campaigns/settings", "settings", "show")

    # written through the CLI, read over HTTP
    payload = tmp_path / "p.json"
    payload.write_text(json.dumps(email_payload(execute_now=False, send_at="2099-01-01 00:00:00")))
    made = cli("campaigns", "create", str(payload), "--user", "2")
    assert made.code == 0, made.err
    assert served.client.get(f"/campaigns/{made.json['id']}").json() == made.json
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"domain_slug": "other"}))
    assert cli("settings", "set", str(settings)).code == 0
    assert served.client.get("/campaigns/settings").json()["domain_slug"] == "other"
    with in_process_worker(served.app):
        export = cli("campaigns", "export", campaign_id).json
        for _ in range(100):
            state = served.client.get(f"/campaigns/{campaign_id}/recipients/export/{export['export_id']}").json()
            if state["status"] != "pending":
                break
            time.sleep(0.1)
    assert state == cli("campaigns", "export-status", campaign_id, export["export_id"]).json
    assert state["status"] == "done"
    over_http = served.client.get(f"/files/{state['file_id']}").json()
    assert over_http == {"id": state["file_id"], **cli("files", "url", state["file_id"]).json}

    # the same mistake is the same error, field for field
    bad = email_payload(message={"subject": "s", "sender": "nope", "content": "{{ contact.nope }}"})
    payload.write_text(json.dumps(bad))
    on_cli = cli("campaigns", "create", str(payload), "--user", "1")
    over_http = served.client.post("/campaigns", json=bad)
    assert on_cli.code == 2 and over_http.status_code == 422
    assert over_http.json() == on_cli.json
