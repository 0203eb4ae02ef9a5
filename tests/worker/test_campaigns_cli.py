"""The campaigns and settings commands, driven through the real entry point on both databases."""

from __future__ import annotations

import json
import uuid

import pytest

from storage.filters import parse_filters
from storage.ledger import insert_recipients
from storage.models import Campaign, CampaignSettings, Contact, RelationsPath, Template, User
from storage.recipients import iter_recipients
from storage.timefmt import now
from tests.cli import CliRunner
from tests.seed_payloads import RELATIONS_PATH, create_payload, future, settings_payload, update_payload
from worker.pipeline.exports import COLUMNS, HEADER, recipient_row


def _contact(last_name: str, **fields) -> Contact:
    return Contact(id=str(uuid.uuid4()), b2c=True, last_name=last_name, first_name=fields.pop("first_name", "Ann"),
                   consent={}, **fields)


def seed_catalogue(sessions) -> None:
    """Settings, users 1, 2, 4, 10 and 34, an email (2) and a letter (3) template, the relations path."""
    with sessions.begin() as s:
        s.add(CampaignSettings(id=1, domain_slug="acme", consent_custom=True,
                               unsubscribe_url="https://acme.example/unsubscribe"))
        for uid in (1, 2, 4, 10, 34):
            s.add(User(id=uid, first_name=f"U{uid}", last_name="Doe", email=f"u{uid}@acme.example", team_id=1))
        s.add(Template(id=2, type="email", company_id=1, title="Email template", user_id=1,
                       content="<html><body>{{ content }}</body></html>"))
        s.add(Template(id=3, type="letter", company_id=1, title="Letter template", user_id=1,
                       content="<html><body>{{ content }}</body></html>"))
        s.add(RelationsPath(id=RELATIONS_PATH, name="Default"))


@pytest.fixture
def cli(monkeypatch, capsys, db_url, sessions):
    seed_catalogue(sessions)
    return CliRunner(monkeypatch, capsys, DATABASE_URL=db_url)


def _write(tmp_path, payload, name="payload.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(payload))
    return str(path)


def test_seed_create_payload_is_accepted_in_seed_shape(cli, tmp_path):
    payload = create_payload()
    result = cli("campaigns", "create", _write(tmp_path, payload), "--user", "1")
    assert result.code == 0, result.out
    body = result.json
    uuid.UUID(body["id"])
    assert body["user"]["id"] == 1 and body["user"]["email"] == "u1@acme.example"
    assert body["name"] == "My campaign" and body["type"] == "email" and body["approved"] is True
    assert body["message"]["subject"] == "This is my subject"
    assert body["template"] == {"id": 2, "type": "email", "company_id": 1, "title": "Email template", "user_id": 1}
    assert body["filter"] == payload["filter"]
    assert body["send_at"] == payload["send_at"]
    assert body["sent_at"] is None and body["total_sent"] is None
    assert [u["id"] for u in body["task"]["distribute_users"]] == [4, 10, 34]
    assert body["task"]["relations_path"] == RELATIONS_PATH
    assert body["status"] == "pending"
    assert body["progress"] == {"total": 0, "sent": 0, "failed": 0, "skipped": 0, "pending": 0}

    shown = cli("campaigns", "show", body["id"])
    assert shown.code == 0 and shown.json["id"] == body["id"] and shown.json["status"] == "pending"


def test_seed_update_payload_is_accepted(cli, tmp_path):
    created = cli("campaigns", "create", _write(tmp_path, create_payload()), "--user", "1").json
    payload = update_payload()
    payload["name"] = "Renamed"
    payload["send_at"] = future(days=40)
    payload["task"]["start_at"] = future(days=40, seconds=1)
    payload["task"]["end_at"] = future(days=40, seconds=2)
    result = cli("campaigns", "update", created["id"], _write(tmp_path, payload, "u.json"))
    assert result.code == 0, result.out
    body = result.json
    assert body["name"] == "Renamed" and body["template_id"] == 2 and body["send_at"] == payload["send_at"]
    assert body["task"]["distribute_users"] == [4, 10, 34]
    assert cli("campaigns", "show", created["id"]).json["name"] == "Renamed"


def test_seed_settings_payload_round_trips(cli, tmp_path):
    result = cli("settings", "set", _write(tmp_path, settings_payload()))
    assert result.code == 0, result.out
    assert result.json == {"domain": None, "domain_slug": "easir", "domain_slug_suffix": "easircampaigns.com",
                           "consent": {"enable": True, "unsubscribe_url": "https://easir.com/unsubscribe"}}
    assert cli("settings", "show").json == result.json


def test_copy_list_delete(cli, tmp_path):
    created = cli("campaigns", "create", _write(tmp_path, create_payload()), "--user", "1").json
    copied = cli("campaigns", "copy", created["id"])
    assert copied.code == 0
    assert copied.json["name"] == "My campaign - copy"
    assert copied.json["send_at"] is None and copied.json["task"] is None
    assert copied.json["id"] != created["id"] and copied.json["status"] == "draft"

    listing = cli("campaigns", "list", "--per-page", "1").json
    assert listing["pagination"]["total"] == 2 and len(listing["data"]) == 1
    assert listing["pagination"]["urls"]["next"] == "/campaigns?page=2&per_page=1"
    assert cli("campaigns", "list", "--search", "COPY").json["pagination"]["total"] == 1
    assert cli("campaigns", "list", "--status", "draft").json["data"][0]["id"] == copied.json["id"]

    assert cli("campaigns", "delete", copied.json["id"]).json == {}
    assert cli("campaigns", "show", copied.json["id"]).code == 3


def test_a_copied_telephone_campaign_cannot_be_sent_before_it_has_a_task(cli, tmp_path):
    payload = create_payload()
    payload.update(type="telephone", template_id=None)
    created = cli("campaigns", "create", _write(tmp_path, payload), "--user", "1")
    assert created.code == 0, created.out
    copied = cli("campaigns", "copy", created.json["id"]).json
    assert copied["task"] is None
    refused = cli("campaigns", "send", copied["id"])
    assert refused.code == 2, refused.out
    assert any(reason.startswith("task:") for reason in refused.json["errors"]["campaign"]), refused.out
    assert cli("campaigns", "show", copied["id"]).json["status"] == "draft"


def test_sent_campaign_cannot_be_updated_or_deleted(cli, tmp_path, sessions):
    created = cli("campaigns", "create", _write(tmp_path, create_payload()), "--user", "1").json
    from storage.models import Campaign

    with sessions.begin() as s:
        s.get(Campaign, created["id"]).status = "completed"
    updated = cli("campaigns", "update", created["id"], _write(tmp_path, update_payload(), "u.json"))
    assert updated.code == 4 and "cannot be updated" in updated.json["message"]
    assert cli("campaigns", "delete", created["id"]).code == 4
    assert cli("campaigns", "show", created["id"]).code == 0


def test_unknown_ids_exit_3(cli, tmp_path):
    for args in (("campaigns", "show", str(uuid.uuid4())), ("campaigns", "show", "not-a-uuid"),
                 ("campaigns", "copy", str(uuid.uuid4())), ("campaigns", "delete", str(uuid.uuid4())),
                 ("campaigns", "recipients", str(uuid.uuid4())),
                 ("campaigns", "update", str(uuid.uuid4()), _write(tmp_path, update_payload())),):
        result = cli(*args)
        assert result.code == 3, (args, result.out)
        assert "not found" in result.json["message"]


def _set(payload: dict, dotted: str, value) -> dict:
    node = payload
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[int(key) if isinstance(node, list) else key]
    if value is _DELETE:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return payload


_DELETE = object()

INVALID = [
    ("name", "name", _DELETE),
    ("name", "name", 42),
    ("type", "type", "sms"),
    ("type", "type", _DELETE),
    ("approved", "approved", "yes"),
    ("message", "message", _DELETE),
    ("message.content", "message.content", _DELETE),
    ("message.subject", "message.subject", _DELETE),
    ("message.subject", "message.subject", "Hi\r\nBcc: victim@example.com"),
    ("message.sender", "message.sender", "not an address"),
    ("message.sender", "message.sender", _DELETE),
    ("message.content", "message.content", "Hello {{ contact.frist_name }}"),
    ("message.content", "message.content", "Hello {% if %}"),
    ("message.subject", "message.subject", "Hi {{ secret }}"),
    ("filter", "filter", _DELETE),
    ("filter.0.operator", "filter.0.operator", "like"),
    ("filter.0.field", "filter.0.field", "contact.fixed_fields.shoe_size"),
    ("template_id", "template_id", 99),
    ("template_id", "template_id", 3),
    ("template_id", "template_id", "2"),
    ("send_at", "send_at", "2016-11-30 00:00:00"),
    ("send_at", "send_at", "30/11/2030"),
    ("send_at", "send_at", _DELETE),
    ("task.distribution_strategy", "task.distribution_strategy", "random"),
    ("task.distribute_users", "task.distribute_users", []),
    ("task.distribute_users.1", "task.distribute_users", [4, 999]),
    ("task.relations_path", "task.relations_path", "not-a-uuid"),
    ("task.relations_path", "task.relations_path", str(uuid.UUID(int=7))),
    ("task.start_at", "task.start_at", "2016-11-30 00:00:01"),
    ("task.end_at", "task.end_at", "2016-11-30 00:00:00"),
    ("task.start_at", "task.start_at", _DELETE),
]


@pytest.mark.parametrize("field,path,value", INVALID, ids=[f"{f}={v!r}"[:60] for f, _, v in INVALID])
def test_invalid_payload_exits_2_naming_the_field(cli, tmp_path, field, path, value):
    payload = _set(create_payload(), path, value)
    result = cli("campaigns", "create", _write(tmp_path, payload), "--user", "1")
    assert result.code == 2, result.out
    body = result.json
    assert field in body["errors"], body
    assert "Traceback" not in result.err
    assert cli("campaigns", "list").json["pagination"]["total"] == 0


def test_telephone_needs_a_task_and_domain_is_required(cli, tmp_path, sessions):
    payload = create_payload()
    payload.update(type="telephone", template_id=None, task=None)
    result = cli("campaigns", "create", _write(tmp_path, payload), "--user", "1")
    assert result.code == 2 and "task" in result.json["errors"]

    with sessions.begin() as s:
        s.get(CampaignSettings, 1).domain_slug = None
    result = cli("campaigns", "create", _write(tmp_path, create_payload()), "--user", "1")
    assert result.code == 2 and "domain" in result.json["errors"]


def test_bad_file_and_unknown_user(cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = cli("campaigns", "create", str(bad), "--user", "1")
    assert result.code == 2 and "file" in result.json["errors"]
    result = cli("campaigns", "create", _write(tmp_path, create_payload()), "--user", "77")
    assert result.code == 2 and "user" in result.json["errors"]


def test_recipients_are_exactly_the_filtered_contacts(cli, tmp_path, sessions):
    with sessions.begin() as s:
        wanted = [_contact("Berger"), _contact("Vandervort", email="v@x.example"), _contact("ØSTERGÅRD")]
        unwanted = [_contact("Smith"), _contact("Wu"), Contact(id=str(uuid.uuid4()), last_name=None, consent={})]
        s.add_all(wanted + unwanted)
    payload = create_payload()
    payload["filter"] = [{"field": "contact.fixed_fields.last_name", "operator": "ct", "value": "E"}]
    created = cli("campaigns", "create", _write(tmp_path, payload), "--user", "1").json
    result = cli("campaigns", "recipients", created["id"], "--per-page", "2")
    assert result.code == 0
    body = result.json
    assert body["pagination"]["total"] == 3
    ids = {item["id"] for item in body["data"]}
    ids |= {item["id"] for item in cli("campaigns", "recipients", created["id"], "--per-page", "2",
                                        "--page", "2").json["data"]}
    assert ids == {c.id for c in wanted}
    item = body["data"][0]
    assert item["delivery"] == {"status": "pending", "reason": None, "at": None}
    assert {f["name"] for f in item["fixed_fields"]} >= {"first_name", "last_name", "email"}
    searched = cli("campaigns", "recipients", created["id"], "--search", "vander").json
    assert [i["id"] for i in searched["data"]] == [wanted[1].id]


def test_the_export_rows_are_the_listing_before_and_after_fan_out(cli, tmp_path, sessions):
    with sessions.begin() as s:
        for i in range(7):
            contact = _contact(f"Berger{i}", email=f"b{i}@x.example")
            contact.consent = {"email": {"consent_given": i % 2 == 0}}
            s.add(contact)
    payload = create_payload()
    payload["filter"] = [{"field": "contact.fixed_fields.last_name", "operator": "ct", "value": "Berger"}]
    campaign_id = cli("campaigns", "create", _write(tmp_path, payload), "--user", "1").json["id"]

    def export_and_listing():
        with sessions() as s:
            campaign = s.get(Campaign, campaign_id)
            rows = [recipient_row(r) for r in iter_recipients(s, campaign, COLUMNS, page_size=3)]
        listing = cli("campaigns", "recipients", campaign_id, "--per-page", "50").json["data"]
        return rows, listing

    for stage in ("before fan-out", "after"):
        rows, listing = export_and_listing()
        assert [r[0] for r in rows] == [item["id"] for item in listing], stage
        status, consent = HEADER.index("Delivery status"), HEADER.index("Email consent")
        assert [r[status] for r in rows] == [item["delivery"]["status"] for item in listing], stage
        assert sorted(r[consent] for r in rows) == ["no"] * 3 + ["yes"] * 4, stage
        assert all(len(r) == len(HEADER) for r in rows)
        if stage == "before fan-out":
            with sessions.begin() as s:  # fan it out: the ledger decides the rows from now on
                campaign = s.get(Campaign, campaign_id)
                insert_recipients(s, campaign, parse_filters(campaign.filter), now())
                campaign.dispatched_at = now()
    assert {r[HEADER.index("Delivery status")] for r in rows} <= {"pending", "skipped"}
