"""Letter campaigns end to end: one PDF per recipient, one ZIP in S3 behind a 5-minute URL, owner notified."""

from __future__ import annotations

import io
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit
import urllib.request
import uuid
import zipfile

import boto3
import pypdf
from sqlalchemy import select

from storage.models import Campaign, Recipient
from tests.cli import CliRunner
from tests.e2e import bundle, contact, drive, in_process_worker, load, make_app
from worker.pipeline import campaign_service


def letter_bundle(contacts):
    data = bundle(contacts)
    data["templates"].append({"id": 3, "type": "letter", "company_id": 1, "title": "Letter", "user_id": 1,
                              "content": "<html><body><p class='head'>ACME A/S</p>{{ content }}</body></html>"})
    return data


def letter_payload(**overrides):
    payload = {
        "name": "Winter letter", "type": "letter", "approved": True, "execute_now": True,
        "message": {"content": "<p>Dear {{ contact.first_name }} {{ contact.last_name }},</p>"
                               "<p>{{ contact.address }}, {{ contact.city }}</p>"},
        "filter": [{"field": "contact.fixed_fields.city", "operator": "nempty"}],
        "template_id": 3,
    }
    payload.update(overrides)
    return payload


def _pdf_text(data: bytes) -> str:
    return "".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(data)).pages)


def test_letters_zip_through_presigned_url(pg_db, redis_url, smtp_server, s3_env, s3_bucket, monkeypatch, capsys):
    storage_url = f"s3://{s3_bucket}/campaigns"
    app = make_app(pg_db, redis_url, smtp_server.url, storage_url=storage_url)
    names = [("Søren", "Østergaard"), ("Zoë", "Brontë"), ("José", "Ibáñez")]
    contacts = [contact(i, first_name=first, last_name=last, address=f"Vestergade {i}", city="Aarhus")
                for i, (first, last) in enumerate(names)]
    contacts.append(contact(10, first_name="Evil", last_name="../../etc", address="Nowhere 1", city="Odense"))
    contacts.append(contact(11, first_name="No", last_name="Address", address=None, city="Odense"))
    contacts.append(contact(12, first_name="Not", last_name="Selected", address="X 1", city=None))
    load(app, letter_bundle(contacts))
    with app.sessions.begin() as session:
        campaign_id = campaign_service.create(session, letter_payload(), 1).id

    cli = CliRunner(monkeypatch, capsys, DATABASE_URL=pg_db, STORAGE_URL=storage_url)
    early = cli("campaigns", "letters", campaign_id)
    assert early.code == 4 and early.json["message"] == "letters are not ready yet"

    with in_process_worker(app) as actors:
        assert drive(app, campaign_id) == "completed"

    first = cli("campaigns", "letters", campaign_id).json["url"]
    query = parse_qs(urlsplit(first).query)
    assert query["X-Amz-Expires"] == ["300"]
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    assert abs((datetime.now(timezone.utc) - signed_at).total_seconds()) < 60  # signed now: a fresh URL
    with urllib.request.urlopen(first) as response:
        archive = zipfile.ZipFile(io.BytesIO(response.read()))
    entries = archive.namelist()
    assert len(entries) == 4 and len(set(entries)) == 4
    for name in entries:
        assert all(ch.isascii() and (ch.isalnum() or ch in "._-") for ch in name) and not name.startswith(".")
        assert ".." not in name and "/" not in name
    by_contact = {}
    for contact_data in contacts[:4]:
        (entry,) = [n for n in entries if contact_data["id"] in n]
        by_contact[contact_data["id"]] = entry
    texts = {cid: _pdf_text(archive.read(entry)) for cid, entry in by_contact.items()}
    for i, (first_name, last_name) in enumerate(names):
        text = texts[str(uuid.UUID(int=10_000 + i))]
        assert f"{first_name} {last_name}" in text and "ACME A/S" in text
    assert all(archive.read(e).startswith(b"%PDF-") for e in entries)
    # the batch parts the PDFs were kept in while sending are gone: the campaign keeps its ZIP only
    listing = boto3.client("s3").list_objects_v2(Bucket=s3_bucket, Prefix=f"campaigns/letters/{campaign_id}/")
    (stored,) = [item["Key"] for item in listing.get("Contents", [])]
    assert stored.endswith(".zip") and "/parts/" not in stored

    with app.sessions() as session:
        ledger = dict(session.execute(select(Recipient.contact_id, Recipient.reason)
                                      .where(Recipient.campaign_id == campaign_id)).all())
        assert ledger[str(uuid.UUID(int=10_011))] == "no_address"
        assert session.get(Campaign, campaign_id).total_sent == 4
    messages = cli("campaigns", "messages", campaign_id).json
    assert messages["pagination"]["total"] == 4 and "Dear" in messages["data"][0]["content"]
    # the owner (user 1) is told by email that the letters are ready
    assert [m for m in smtp_server.messages if "john@acme.example" in m.rcpt_tos]


def test_letter_preview_is_a_pdf(pg_db, redis_url, s3_env, s3_bucket, monkeypatch, capsys):
    storage_url = f"s3://{s3_bucket}/p"
    app = make_app(pg_db, redis_url, None, storage_url=storage_url)
    load(app, letter_bundle([contact(1, first_name="Zoë", address="A 1", city="Aarhus")]))
    with app.sessions.begin() as session:
        campaign_id = campaign_service.create(session, letter_payload(), 1).id
    cli = CliRunner(monkeypatch, capsys, DATABASE_URL=pg_db, STORAGE_URL=storage_url)
    url = cli("campaigns", "preview", campaign_id).json["download_url"]
    with urllib.request.urlopen(url) as response:
        data = response.read()
    assert data.startswith(b"%PDF-") and "Dear Zoë Larsen" in _pdf_text(data)
