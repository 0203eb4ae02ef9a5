"""Previews and test emails on the embedded default (SQLite, BROKER_URL=memory://, no SMTP_URL), through
the real entry point, run in a directory of the test's own so var/ lands there."""

from __future__ import annotations

import email
import json
from email import policy
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tests.cli import CliRunner
from worker.cli.demo import demo_bundle, email_payload, letter_payload, telephone_payload

HOSTILE = "<script>alert(1)</script>"
FIRST_ID = "00000000-0000-0000-0000-000000000000"  # sorts before the demo contacts: the first recipient


def _contact(contact_id: str, first_name: str, last_name: str, segment: str, **fields: str | None) -> dict:
    fixed = {"first_name": first_name, "last_name": last_name, "email": None, "address": "Vestergade 1",
             "city": "Aarhus", "zip_code": "8000", **fields}
    return {"id": contact_id, "b2c": True, "account": None, "user": {"id": 1}, "team_id": 1, "status": None,
            "custom_fields": {"segment": segment}, "fixed_fields": [{"name": k, "value": v} for k, v in fixed.items()],
            "consent": {}, "created_at": "2026-01-01 10:00:00", "updated_at": "2026-01-01 10:00:00"}


@pytest.fixture
def cli(monkeypatch, capsys, tmp_path):
    """The CLI on the embedded default, in tmp_path, with the demo data plus a hostile first contact."""
    for name in ("DATABASE_URL", "STORAGE_URL", "SMTP_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner(monkeypatch, capsys, BROKER_URL="memory://")
    bundle = demo_bundle(contacts=12)
    bundle["users"][1]["last_name"] = "<b>Bold</b>"
    bundle["contacts"].insert(0, _contact(FIRST_ID, HOSTILE, "Hansen & Co", "vip", mobile_phone_number="+4512345678"))
    (tmp_path / "bundle.json").write_text(json.dumps(bundle))
    assert runner("db", "upgrade").code == 0
    loaded = runner("load", "bundle.json")
    assert loaded.code == 0, loaded.err
    return runner


def _create(cli: CliRunner, payload: dict, name: str = "campaign.json") -> str:
    Path(name).write_text(json.dumps(payload))
    created = cli("campaigns", "create", name, "--user", "1")
    assert created.code == 0, created.out + created.err
    return created.json["id"]


def _preview(cli: CliRunner, campaign_id: str) -> Path:
    result = cli("campaigns", "preview", campaign_id)
    assert result.code == 0, result.err
    url = result.json["download_url"]
    assert url.startswith("file://")
    path = Path(unquote(urlparse(url).path))
    assert path.is_file() and path.is_relative_to(Path.cwd() / "var")
    return path


def _telephone(**changes) -> dict:
    payload = telephone_payload()
    payload["name"] = "Calls <for> \"VIP\" & friends"
    payload["filter"] = [{"field": "contact.custom_fields.segment", "operator": "eq", "value": "vip"}]
    payload.update(changes)
    return payload


def test_telephone_preview_shows_the_first_recipient_and_the_task_escaped(cli):
    payload = _telephone()
    page = _preview(cli, _create(cli, payload)).read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Hansen &amp; Co" in page
    assert "<script" not in page and "<b>" not in page
    assert "+4512345678" in page
    assert "Calls &lt;for&gt; &quot;VIP&quot; &amp; friends" in page
    assert "Doe Demo" in page and "Florian &lt;b&gt;Bold&lt;/b&gt;" in page and "Dorris Demo" in page
    assert "distribute" in page
    assert "Default" in page and payload["task"]["relations_path"] in page
    assert payload["task"]["start_at"] in page and payload["task"]["end_at"] in page


def test_telephone_preview_without_a_matching_contact(cli):
    payload = _telephone(filter=[{"field": "contact.custom_fields.segment", "operator": "eq", "value": "none"}])
    page = _preview(cli, _create(cli, payload)).read_text(encoding="utf-8")
    assert "No contact matches the filter" in page
    assert "Florian" in page


def test_email_and_letter_previews_still_render(cli):
    html = _preview(cli, _create(cli, email_payload(), "email.json"))
    assert html.suffix == ".html" and "ACME news" in html.read_text(encoding="utf-8")
    pdf = _preview(cli, _create(cli, letter_payload(), "letter.json"))
    assert pdf.suffix == ".pdf" and pdf.read_bytes().startswith(b"%PDF")


def _maildir_messages() -> list[email.message.EmailMessage]:
    maildir = Path("var/mail")
    files = [f for sub in ("new", "cur") if (maildir / sub).is_dir() for f in (maildir / sub).iterdir()]
    return [email.message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]


def _assert_one_test_email(result) -> None:
    assert result.code == 0, result.err
    assert result.json == {"email": "me@example.com"}
    (message,) = _maildir_messages()
    assert message["Subject"].startswith("[TEST] ")
    assert message["To"] == "me@example.com"
    assert message["Delivered-To"] == "me@example.com"
    assert f"no SMTP_URL: test email captured in {Path('var/mail').resolve()}" in result.err


def test_test_email_of_a_stored_campaign_is_captured_locally(cli):
    campaign_id = _create(cli, email_payload())
    _assert_one_test_email(cli("campaigns", "test-email", campaign_id, "me@example.com"))


def test_test_email_of_a_payload_is_captured_locally(cli):
    Path("payload.json").write_text(json.dumps(email_payload()))
    _assert_one_test_email(cli("campaigns", "test-email", "--payload", "payload.json", "--user", "1",
                               "me@example.com"))


def test_test_email_of_a_telephone_campaign_is_refused_without_mail(cli):
    result = cli("campaigns", "test-email", _create(cli, _telephone()), "me@example.com")
    assert result.code == 2 and "type" in result.json["errors"]
    assert _maildir_messages() == []


def test_test_email_with_smtp_url_goes_to_that_server(cli, monkeypatch, smtp_server):
    campaign_id = _create(cli, email_payload())
    monkeypatch.setenv("SMTP_URL", smtp_server.url)
    result = cli("campaigns", "test-email", campaign_id, "me@example.com")
    assert result.code == 0, result.err
    (received,) = smtp_server.delivered_to("me@example.com")
    assert b"[TEST] " in received.data
    assert not Path("var/mail").exists() and "capturing" not in result.err and "captured" not in result.err
