"""DKIM_KEYS_DIR end to end: every email the service sends from a keyed domain arrives signed, and a
bad directory stops the start naming the variable."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser

from tests.cli import CliRunner
from tests.dkimkeys import StubDns, write_ed25519_key, write_rsa_key
from tests.e2e import bundle, contact, drive, email_payload, in_process_worker, load, make_app
from worker.pipeline import campaign_service
from worker.pipeline.archive import notify_owner
from worker.pipeline.side_jobs import send_test_email

SENDING_DOMAIN = "acme.easircampaigns.com"  # the e2e bundle's domain_slug under the default suffix


def test_campaign_test_and_notification_emails_arrive_signed(pg_db, redis_url, smtp_server, tmp_path):
    dns = StubDns()
    keys = tmp_path / "dkim"
    keys.mkdir()
    write_rsa_key(keys, "mail2026", SENDING_DOMAIN, dns)
    write_ed25519_key(keys, "ed2026", SENDING_DOMAIN, dns)
    app = make_app(pg_db, redis_url, smtp_server.url, dkim_keys_dir=str(keys))
    load(app, bundle([contact(i) for i in range(12)] + [contact(100, first_name="Zoë Ørsted")]))
    with app.sessions.begin() as session:
        campaign_id = campaign_service.create(session, email_payload(), 1).id
    with in_process_worker(app):
        assert drive(app, campaign_id) == "completed"
    send_test_email(app, "tester@example.com", campaign_id=campaign_id)
    notify_owner(app, campaign_id, 3)  # the letters-ready email: any campaign row will do

    received = {m.rcpt_tos[0]: m for m in smtp_server.messages}
    assert len(received) == len(smtp_server.messages) == 15  # 13 recipients, the tester, the owner
    subjects = set()
    for rcpt, mail in received.items():
        assert mail.data.startswith(b"DKIM-Signature: "), rcpt
        assert dns.verify(mail.data) == [True, True], rcpt  # the ed25519 and the RSA key both signed
        subjects.add(BytesParser(policy=policy.default).parsebytes(mail.data)["Subject"])
    assert {"Hi Zoë Ørsted", "Your letters are ready: Spring news"} <= subjects
    assert received["tester@example.com"].data.count(b"\r\nSubject: [TEST] Hi") == 1
    assert sorted(set(dns.asked)) == [b"ed2026._domainkey.acme.easircampaigns.com.",
                                      b"mail2026._domainkey.acme.easircampaigns.com."]
    altered = received["person3@example.com"].data.replace(b"Dear Person3", b"Dear Person4")
    assert dns.verify(altered) == [False, False]
    app.close()


def test_a_campaign_from_a_domain_without_a_key_goes_unsigned(pg_db, redis_url, smtp_server, tmp_path):
    write_rsa_key(tmp_path, "mail2026", "elsewhere.example", bits=1024)
    app = make_app(pg_db, redis_url, smtp_server.url, dkim_keys_dir=str(tmp_path))
    load(app, bundle([contact(i) for i in range(3)]))
    with app.sessions.begin() as session:
        campaign_id = campaign_service.create(session, email_payload(), 1).id
    with in_process_worker(app):
        assert drive(app, campaign_id) == "completed"
    assert len(smtp_server.messages) == 3
    assert not any(b"DKIM-Signature" in m.data for m in smtp_server.messages)
    app.close()


def test_a_missing_directory_or_bad_key_exits_2_naming_dkim_keys_dir(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "no-such-dir"
    result = CliRunner(monkeypatch, capsys, DKIM_KEYS_DIR=str(missing))("status")
    assert result.code == 2, result.out + result.err
    said = result.json["errors"]["DKIM_KEYS_DIR"]
    assert said == [f"{missing} does not exist"]
    assert "Traceback" not in result.err

    (tmp_path / "mail2026.acme.example.pem").write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n"
                                                        "-----END PRIVATE KEY-----\n")
    result = CliRunner(monkeypatch, capsys, DKIM_KEYS_DIR=str(tmp_path))("status")
    assert result.code == 2 and "Traceback" not in result.err
    [said] = result.json["errors"]["DKIM_KEYS_DIR"]
    assert str(tmp_path / "mail2026.acme.example.pem") in said and "c2VjcmV0LWJ5dGVz" not in result.out + result.err


def test_an_empty_dkim_keys_dir_means_unset(monkeypatch):
    from worker.runtime.settings import Settings

    monkeypatch.setenv("DKIM_KEYS_DIR", "")
    assert Settings().dkim_keys_dir is None
