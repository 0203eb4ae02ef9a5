"""The local capturing SMTP server writes what it accepts into a Maildir."""

from __future__ import annotations

import mailbox

from worker.channels.mailcatcher import MailCatcher
from worker.channels.smtp import OutgoingMail, SendResult, SmtpConfig, SmtpSender


def message(n: int) -> bytes:
    return (f"From: news@acme.example\r\nTo: Reader {n} <reader{n}@example.com>\r\n"
            f"Subject: Issue {n}\r\nMessage-ID: <issue-{n}@acme.example>\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\nDear reader {n},\r\n.dotted line\r\n").encode()


def test_catcher_writes_one_maildir_file_per_message(tmp_path):
    maildir = tmp_path / "mail"
    catcher = MailCatcher(maildir)
    url = catcher.start()
    try:
        assert url == f"smtp://127.0.0.1:{catcher.port}" and catcher.port > 0
        with SmtpSender(SmtpConfig.from_url(url), pool_size=3, retry_delays=()) as sender:
            outcomes = sender.send_many([
                OutgoingMail("bounce@acme.example", [f"reader{n}@example.com"], message(n)) for n in range(12)
            ])
        assert all(isinstance(o, SendResult) for o in outcomes)
        assert catcher.count == 12
    finally:
        catcher.stop()

    assert len(list((maildir / "new").iterdir())) == 12
    box = mailbox.Maildir(maildir, create=False)
    by_subject = {msg["Subject"]: msg for msg in box}
    assert sorted(by_subject) == sorted(f"Issue {n}" for n in range(12))
    for n in range(12):
        msg = by_subject[f"Issue {n}"]
        assert msg["Message-ID"] == f"<issue-{n}@acme.example>"
        assert msg["To"] == f"Reader {n} <reader{n}@example.com>"
        assert msg["Delivered-To"] == f"reader{n}@example.com"
        assert msg["Return-Path"] == "<bounce@acme.example>"
        assert msg.get_payload() == f"Dear reader {n},\n.dotted line\n"


def test_catcher_can_be_used_as_a_context_manager_and_keeps_mail_after_stop(tmp_path):
    with MailCatcher(tmp_path / "mail") as catcher:
        with SmtpSender(SmtpConfig.from_url(catcher.url), retry_delays=()) as sender:
            sender.send("bounce@acme.example", ["a@example.com", "b@example.com"], message(1))
    box = mailbox.Maildir(tmp_path / "mail", create=False)
    (msg,) = list(box)
    assert msg.get_all("Delivered-To") == ["a@example.com", "b@example.com"]
    assert catcher.count == 1
