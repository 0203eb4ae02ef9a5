"""The service layer both doors call (worker.pipeline.queries / commands): what no CLI test covers."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import redis
from sqlalchemy import func, select

from storage.errors import NotFound, ValidationFailed
from storage.models import Campaign, StoredFile
from storage.timefmt import fmt, now
from tests.e2e import bundle, contact, email_payload, load, make_app
from tests.seed_payloads import RELATIONS_PATH
from worker.pipeline import commands, queries


@pytest.fixture
def app(pg_db, tmp_path):
    """An App on PostgreSQL, the in-process broker (no worker: inline) and a local store, with data."""
    app = make_app(pg_db, "memory://", None, storage_url=f"file://{tmp_path}/objects")
    load(app, bundle([contact(i, mobile_phone_number=f"+45{20000000 + i}") for i in range(3)]))
    yield app
    app.close()


def _stored(url: str) -> Path:
    assert url.startswith("file://")
    return Path(unquote(urlsplit(url).path))


def _count(app, model) -> int:
    with app.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_preview_payload_renders_an_unsaved_email_campaign(app):
    preview = commands.preview_payload(app, email_payload(), 1)
    assert set(preview) == {"download_url"}
    html = _stored(preview["download_url"]).read_text(encoding="utf-8")
    assert "Dear Person0 (silver)" in html and "<div class='wrap'>" in html  # first recipient, in the template
    assert _count(app, Campaign) == 0  # nothing saved but the file
    assert _count(app, StoredFile) == 1


def test_preview_payload_of_a_telephone_campaign_shows_its_task(app):
    start = now() + timedelta(days=1)
    payload = {"name": "Call <round>", "type": "telephone", "approved": True, "execute_now": True,
               "filter": [{"field": "contact.fixed_fields.last_name", "operator": "eq", "value": "larsen"}],
               "task": {"distribution_strategy": "distribute", "distribute_users": [1, 2],
                        "relations_path": RELATIONS_PATH, "start_at": fmt(start),
                        "end_at": fmt(start + timedelta(days=7))}}
    page = _stored(commands.preview_payload(app, payload, None)["download_url"]).read_text(encoding="utf-8")
    assert "Call &lt;round&gt;" in page and "Person0 Larsen" in page and "+4520000000" in page
    assert "Doe John" in page and "Ann Lee" in page and "Default" in page


def test_preview_payload_refuses_an_invalid_payload(app):
    with pytest.raises(ValidationFailed) as failed:
        broken = {"subject": "Hi", "sender": "news@acme.example", "content": "{{ contact.first_name "}
        commands.preview_payload(app, email_payload(message=broken), 1)
    assert "message.content" in failed.value.errors
    assert _count(app, StoredFile) == 0


def test_file_url_names_the_file(app):
    url = commands.preview_payload(app, email_payload(), 1)["download_url"]
    with app.sessions() as session:
        file_id = session.scalars(select(StoredFile.id)).one()
    assert queries.file_url(app, file_id) == {"id": file_id, "url": url}
    with pytest.raises(NotFound):
        queries.file_url(app, "00000000-0000-0000-0000-000000000000")


def test_pagination_urls_are_absolute_with_a_base_url_and_encoded(app):
    for n in range(3):
        commands.create_campaign(app, email_payload(name=f"Fish & chips {n}", execute_now=False, approved=False), 1)
    commands.create_campaign(app, email_payload(name="Other", approved=False), 1)
    listing = queries.list_campaigns(app, search="fish & chips", teams="1,2", page=2, per_page=1,
                                     base_url="http://127.0.0.1:8000/")
    assert listing["pagination"]["total"] == 3 and len(listing["data"]) == 1
    urls = listing["pagination"]["urls"]
    assert urls["previous"] == ("http://127.0.0.1:8000/campaigns?page=1&per_page=1&teams=1,2"
                                "&search=fish+%26+chips")
    parts = urlsplit(urls["next"])
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "127.0.0.1:8000", "/campaigns")
    assert parse_qs(parts.query) == {"page": ["3"], "per_page": ["1"], "teams": ["1,2"], "search": ["fish & chips"]}
    # The CLI passes no base_url: relative, as before.
    assert queries.list_campaigns(app, per_page=1)["pagination"]["urls"]["next"] == "/campaigns?page=2&per_page=1"

    campaign_id = listing["data"][0]["id"]
    recipients = queries.recipients(app, campaign_id, search="Larsen", per_page=1, base_url="https://api.example")
    assert recipients["pagination"]["urls"]["next"] == (
        f"https://api.example/campaigns/{campaign_id}/recipients?page=2&per_page=1&search=Larsen")


@pytest.mark.parametrize(("arguments", "field"), [
    ({"status": "sent-ish"}, "status"),
    ({"type": "fax"}, "type"),
    ({"teams": "1,x"}, "teams"),
    ({"page": 0}, "page"),
    ({"per_page": 0}, "per_page"),
    ({"per_page": 501}, "per_page"),
])
def test_list_campaigns_names_the_bad_argument(sqlite_url, arguments, field):
    app = make_app(sqlite_url, "memory://", None)
    try:
        with pytest.raises(ValidationFailed) as failed:
            queries.list_campaigns(app, **arguments)
        assert list(failed.value.errors) == [field]
        assert queries.list_campaigns(app, status="sent", type="letter", teams="1", page=1, per_page=500)["data"] == []
    finally:
        app.close()


def test_paginated_queries_check_their_page(app):
    created = commands.create_campaign(app, email_payload(approved=False), 1)
    with pytest.raises(ValidationFailed) as failed:
        queries.recipients(app, created["id"], page=0)
    assert list(failed.value.errors) == ["page"]
    with pytest.raises(ValidationFailed) as failed:
        queries.messages(app, created["id"], per_page=1000)
    assert list(failed.value.errors) == ["per_page"]


def _dispatch_messages(redis_url: str) -> list[dict]:
    client = redis.Redis.from_url(redis_url)
    try:
        rids = client.lrange("dramatiq:campaigns", 0, -1)
        return [json.loads(client.hget("dramatiq:campaigns.msgs", rid)) for rid in rids]
    finally:
        client.close()


def test_create_with_execute_now_enqueues_one_dispatch_on_redis(pg_db, redis_url):
    app = make_app(pg_db, redis_url, None)
    try:
        load(app, bundle([contact(1)]))
        tomorrow = fmt(now() + timedelta(days=1))
        later = commands.create_campaign(app, email_payload(execute_now=False, send_at=tomorrow), 1)
        draft = commands.create_campaign(app, email_payload(approved=False), 1)
        assert (later["status"], draft["status"]) == ("pending", "draft")
        assert _dispatch_messages(redis_url) == []

        created = commands.create_campaign(app, email_payload(), 1)
        assert created["status"] == "pending"
        queued = _dispatch_messages(redis_url)
        assert [(m["actor_name"], m["args"]) for m in queued] == [("dispatch_campaign", [created["id"]])]
    finally:
        app.close()


def test_create_with_execute_now_inline_leaves_it_due(app):
    created = commands.create_campaign(app, email_payload(), 1)
    assert created["status"] == "pending" and created["send_at"] is not None
    assert queries.show_campaign(app, created["id"])["status"] == "pending"  # `run`'s scheduler claims it
