"""Every endpoint of the seed (and the contract's additions) over real HTTP, as a client would call them."""

from __future__ import annotations

import json

import redis
from sqlalchemy import update

from storage.models import Campaign
from tests.seed_payloads import create_payload, settings_payload, update_payload
from tests.worker.api.conftest import Served


def seed_payload(**overrides) -> dict:
    """The seed's create example with users that exist here."""
    payload = create_payload()
    payload["task"]["distribute_users"] = [1, 2]
    payload.update(overrides)
    return payload


def queued(served: Served, queue: str) -> list[dict]:
    """The Dramatiq messages waiting on a Redis queue."""
    client = redis.Redis.from_url(served.app.settings.broker_url)
    try:
        ids = client.lrange(f"dramatiq:{queue}", 0, -1)
        return [json.loads(client.hget(f"dramatiq:{queue}.msgs", i)) for i in ids]
    finally:
        client.close()


def test_create_show_list_update_copy_delete(api: Served):
    c = api.client
    created = c.post("/campaigns", json=seed_payload())
    assert created.status_code == 201, created.text
    campaign = created.json()
    assert campaign["user"]["id"] == 1 and campaign["name"] == "My campaign"
    assert campaign["task"]["distribute_users"][0]["id"] == 1  # users as objects, as the seed shows
    assert campaign["status"] == "pending" and campaign["template"]["id"] == 2

    shown = c.get(f"/campaigns/{campaign['id']}")
    assert shown.status_code == 200 and shown.json()["id"] == campaign["id"]

    for _ in range(2):
        assert c.post("/campaigns", json=seed_payload(name="Other")).status_code == 201
    page = c.get("/campaigns", params={"per_page": 2, "type": "email", "search": "Other"}).json()
    assert page["pagination"]["total"] == 2 and len(page["data"]) == 2
    first = c.get("/campaigns", params={"per_page": 1}).json()
    assert first["pagination"]["urls"]["next"].startswith(api.url + "/campaigns?page=2&per_page=1")
    assert c.get("/campaigns", params={"status": "pending", "teams": "1"}).json()["pagination"]["total"] == 3

    updated = c.put(f"/campaigns/{campaign['id']}", json={**update_payload(), "name": "Renamed",
                                                          "task": None})
    assert updated.status_code == 200, updated.text
    assert updated.json()["name"] == "Renamed" and updated.json()["template_id"] == 2

    copy = c.post(f"/campaigns/{campaign['id']}/copy")
    assert copy.status_code == 201 and copy.json()["name"] == "Renamed - copy" and copy.json()["id"] != campaign["id"]

    assert c.delete(f"/campaigns/{copy.json()['id']}").status_code == 204
    assert c.get(f"/campaigns/{copy.json()['id']}").status_code == 404


def test_sent_campaigns_refuse_update_and_delete(api: Served):
    c = api.client
    campaign = c.post("/campaigns", json=seed_payload()).json()
    with api.app.sessions.begin() as session:  # as finalise leaves a sent campaign
        session.execute(update(Campaign).where(Campaign.id == campaign["id"]).values(status="completed"))
    refused = c.put(f"/campaigns/{campaign['id']}", json=update_payload())
    assert refused.status_code == 409 and refused.json()["message"]
    assert c.delete(f"/campaigns/{campaign['id']}").status_code == 409
    assert c.get(f"/campaigns/{campaign['id']}").json()["status"] == "completed"


def test_settings_get_and_put(api: Served):
    c = api.client
    put = c.put("/campaigns/settings", json=settings_payload())
    assert put.status_code == 200, put.text
    shown = c.get("/campaigns/settings").json()
    assert shown["domain_slug"] == "easir" and shown["consent"]["unsubscribe_url"] == "https://easir.com/unsubscribe"
    assert shown["domain_slug_suffix"]


def test_execute_now_and_send_enqueue_the_dispatch_message(api: Served):
    c = api.client
    now = c.post("/campaigns", json=seed_payload(execute_now=True, send_at=None))
    assert now.status_code == 201, now.text
    messages = queued(api, "campaigns")
    assert [(m["actor_name"], m["args"]) for m in messages] == [("dispatch_campaign", [now.json()["id"]])]

    later = c.post("/campaigns", json=seed_payload()).json()
    sent = c.post(f"/campaigns/{later['id']}/send")
    assert sent.status_code == 200 and sent.json()["id"] == later["id"]
    assert [m["args"] for m in queued(api, "campaigns")][-1] == [later["id"]]


def test_pause_resume_cancel(api: Served):
    c = api.client
    campaign = c.post("/campaigns", json=seed_payload(execute_now=True, send_at=None)).json()
    assert c.post(f"/campaigns/{campaign['id']}/pause").json()["status"] == "paused"
    assert c.post(f"/campaigns/{campaign['id']}/resume").json()["status"] in ("pending", "sending")
    assert c.post(f"/campaigns/{campaign['id']}/cancel").json()["status"] == "cancelled"
    again = c.post(f"/campaigns/{campaign['id']}/pause")
    assert again.status_code == 409 and "message" in again.json()


def test_recipients_preview_test_email_tasks_letters(api: Served):
    c = api.client
    campaign = c.post("/campaigns", json=seed_payload(filter=[])).json()
    recipients = c.get(f"/campaigns/{campaign['id']}/recipients", params={"per_page": 4}).json()
    assert recipients["pagination"]["total"] == 6 and len(recipients["data"]) == 4
    assert recipients["data"][0]["delivery"] == {"status": "pending", "reason": None, "at": None}
    assert recipients["pagination"]["urls"]["next"].startswith(api.url)

    preview = c.get(f"/campaigns/{campaign['id']}/preview")
    assert preview.status_code == 200 and preview.json()["download_url"]
    raw = c.post("/campaigns/preview", json=seed_payload())
    assert raw.status_code == 200 and raw.json()["download_url"]

    stored = c.post(f"/campaigns/{campaign['id']}/test-email", json={"email": "me@example.com"})
    assert stored.status_code == 202 and stored.json() == {"email": "me@example.com"}
    payload = c.post("/campaigns/test-email", json=seed_payload())  # no email: the token's user
    assert payload.status_code == 202 and payload.json() == {"email": "john@acme.example"}
    tests = [m for m in queued(api, "default") if m["actor_name"] == "send_test_email"]
    assert [m["args"] for m in tests] == [["me@example.com"], ["john@acme.example"]]

    assert c.get(f"/campaigns/{campaign['id']}/tasks").json() == {"data": []}
    letters = c.get(f"/campaigns/{campaign['id']}/letters")
    assert letters.status_code == 409  # an email campaign has no letters


def test_letters_conflict_until_the_zip_exists(api: Served):
    c = api.client
    letter = c.post("/campaigns", json=seed_payload(type="letter", template_id=None,
                                                     message={"content": "<p>Hello</p>"})).json()
    refused = c.get(f"/campaigns/{letter['id']}/letters")
    assert refused.status_code == 409 and "not ready" in refused.json()["message"]


def test_export_and_files_inline_on_sqlite(sqlite_api: Served):
    c = sqlite_api.client
    campaign = c.post("/campaigns", json=seed_payload(filter=[])).json()
    started = c.get(f"/campaigns/{campaign['id']}/recipients/export")
    assert started.status_code == 202, started.text
    export_id = started.json()["export_id"]
    state = c.get(f"/campaigns/{campaign['id']}/recipients/export/{export_id}").json()
    assert state["status"] == "done" and state["file_id"]  # in-process broker, no worker: run inline
    file = c.get(f"/files/{state['file_id']}")
    assert file.status_code == 200 and file.json()["id"] == state["file_id"] and file.json()["url"]
    assert c.get("/files/nope").status_code == 404


def test_status_healthz_metrics_openapi(api: Served):
    anonymous = api.anonymous()
    assert anonymous.get("/healthz").json() == {"database": "ok", "broker": "ok"}
    assert anonymous.get("/metrics").status_code == 200
    assert anonymous.get("/openapi.json").status_code == 401
    spec = api.client.get("/openapi.json").json()
    assert "/campaigns/{campaign_id}/recipients/export/{export_id}" in spec["paths"]
    assert "swagger-ui" in api.client.get("/docs").text
    status = api.client.get("/status").json()
    assert {q["queue"] for q in status["queues"]} == {"campaigns", "delivery", "default"}


def test_letters_url_over_http_once_the_zip_exists(pg_db, redis_url, smtp_server, s3_env, s3_bucket):
    """A letter campaign created over HTTP: 409 until its ZIP exists, then a presigned URL valid 300 s."""
    import io
    import zipfile
    from urllib.parse import parse_qs, urlparse

    import httpx

    from tests.e2e import contact, drive, in_process_worker, load, make_app
    from tests.worker.api.conftest import serve
    from tests.worker.test_letters_e2e import letter_bundle, letter_payload

    app = make_app(pg_db, redis_url, smtp_server.url, storage_url=f"s3://{s3_bucket}/letters")
    load(app, letter_bundle([contact(i, address=f"Street {i}", city="Aarhus") for i in range(3)]))
    try:
        for served in serve(app):
            created = served.client.post("/campaigns", json=letter_payload(execute_now=False,
                                                                            send_at="2099-01-01 00:00:00"))
            assert created.status_code == 201, created.text
            campaign_id = created.json()["id"]
            assert served.client.get(f"/campaigns/{campaign_id}/letters").status_code == 409
            assert served.client.post(f"/campaigns/{campaign_id}/send").status_code == 200
            with in_process_worker(app):
                assert drive(app, campaign_id) == "completed"
            answer = served.client.get(f"/campaigns/{campaign_id}/letters")
            assert answer.status_code == 200, answer.text
            url = answer.json()["url"]
            query = parse_qs(urlparse(url).query)
            assert query.get("X-Amz-Expires") == ["300"]
            archive = zipfile.ZipFile(io.BytesIO(httpx.get(url).content))
            assert len(archive.namelist()) == 3
    finally:
        app.close()
