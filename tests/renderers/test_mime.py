"""Email bytes: parsed back with the standard library, headers and parts as a mail client sees them."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta, timezone
from email import policy
from email.parser import BytesParser
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from renderers.errors import HeaderInjection, InvalidAddress, RenderError
from renderers import mime
from renderers.mime import EmailFrame, build_email, is_valid_address, parse_address, stable_message_id

MID = "<0b8f1c4e9a5d4f7e8c1b2a3d4e5f6a7b@acme.example>"
HTML = "<html><body><p>Hej Zoë &amp; Søren, café é</p></body></html>"
TEXT = "Hej Zoë & Søren, café é\n"


def email(**overrides):
    args = dict(
        from_addr=("Acme Ø", "noreply@acme.example"),
        to_addr="Zoë Ørsted <zoe@example.com>",
        subject="Tilbud til Zoë",
        html=HTML,
        text=TEXT,
        message_id=MID,
    )
    args.update(overrides)
    return build_email(**args)


def parse(raw: bytes):
    return BytesParser(policy=policy.default).parsebytes(raw)


def lf(value: str) -> str:
    return value.replace("\r\n", "\n")


def test_headers_and_both_parts_round_trip():
    when = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)
    raw = email(reply_to="John <john@acme.example>", list_unsubscribe="https://acme.example/u?c=1&k=2",
                extra_headers={"X-Campaign-Id": "fab657f1"}, date=when)
    msg = parse(raw)
    assert msg["From"].addresses[0].display_name == "Acme Ø"
    assert msg["From"].addresses[0].addr_spec == "noreply@acme.example"
    assert msg["To"].addresses[0].display_name == "Zoë Ørsted"
    assert msg["To"].addresses[0].addr_spec == "zoe@example.com"
    assert msg["Subject"] == "Tilbud til Zoë"
    assert msg["Date"].datetime == when
    assert msg["Message-ID"] == MID
    assert msg["MIME-Version"] == "1.0"
    assert msg["Reply-To"].addresses[0].addr_spec == "john@acme.example"
    assert msg["List-Unsubscribe"] == "<https://acme.example/u?c=1&k=2>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["X-Campaign-Id"] == "fab657f1"
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert lf(parts[0].get_content()) == TEXT
    assert lf(parts[1].get_content()) == HTML
    assert not msg.defects and not any(p.defects for p in parts)


def test_wire_form_is_seven_bit_with_short_crlf_lines():
    raw = email(subject="Ø" * 200, html="<p>" + "é" * 5000 + "</p>", text="x " * 3000,
                to_addr=("Long Name " * 30, "zoe@example.com"))
    raw.decode("ascii")
    assert parse(raw)["To"].addresses[0].display_name == ("Long Name " * 30).strip()
    lines = raw.split(b"\r\n")
    assert b"\n" not in b"".join(lines)
    assert max(len(line) for line in lines) <= 78


def test_optional_headers_are_absent_when_not_given():
    msg = parse(email())
    assert msg["Reply-To"] is None
    assert msg["List-Unsubscribe"] is None
    assert msg["List-Unsubscribe-Post"] is None
    assert msg["Date"] is not None


@pytest.mark.parametrize(
    "subject",
    [
        "Ø ë é — a subject long enough to need several encoded words " * 4,
        "Plain ASCII subject",
        "Looks =?utf-8?q?encoded?= but is literal",
        "",
        "Emoji 🎉 and CJK 漢字 mixed with ASCII",
    ],
)
def test_subject_round_trips(subject):
    assert parse(email(subject=subject))["Subject"] == subject


@pytest.mark.parametrize(
    ("to_addr", "name"),
    [
        ('"Doe, John" <john@example.com>', "Doe, John"),
        (("Zoë \"Z\" Ørsted", "zoe@example.com"), 'Zoë "Z" Ørsted'),
        (("Ann O'Neil (sales)", "ann@example.com"), "Ann O'Neil (sales)"),
        ("plain@example.com", ""),
        ((None, "plain@example.com"), ""),
        (("Doe, John Ö. (Sales) \"The Boss\" and a very long tail of many words", "john@example.com"),
         'Doe, John Ö. (Sales) "The Boss" and a very long tail of many words'),
    ],
)
def test_display_names_round_trip(to_addr, name):
    address = parse(email(to_addr=to_addr))["To"].addresses[0]
    assert address.display_name == name
    assert address.addr_spec in ("john@example.com", "zoe@example.com", "ann@example.com", "plain@example.com")


def test_mostly_non_ascii_bodies_round_trip():
    text = "Ελληνικά και русский текст, 日本語のテキスト\n" * 40
    msg = parse(email(text=text, html=f"<p>{text}</p>"))
    plain, html = msg.iter_parts()
    assert lf(plain.get_content()) == text
    assert lf(html.get_content()) == f"<p>{text}</p>"


def test_long_lines_trailing_spaces_and_dots_survive():
    text = "a" * 300 + "   \n.\n..leading dots\nFrom the start\n=3D not decoded twice\r\nCRLF line\n"
    plain = next(parse(email(text=text)).iter_parts())
    assert lf(plain.get_content()) == text.replace("\r\n", "\n")


# Bodies as templates may render them: line ends of every kind, dots, NULs, long lines, non-ASCII.
_BODY = st.lists(st.sampled_from(["\r", "\n", "\r\n", ".", "\x00", "a", "é", "Ø", " ", "=", "x" * 500, "-"]),
                 max_size=60).map("".join)


@settings(max_examples=300, deadline=None)
@given(html=_BODY, text=_BODY, subject=st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
                                               max_size=120))
def test_every_line_of_a_built_email_ends_in_crlf(html, text, subject):
    # The SMTP channel is told so (OutgoingMail.crlf) and skips its own scan: this is what it relies on.
    raw = EmailFrame(from_addr=FROM, reply_to=REPLY).build(**personal(html=html, text=text, subject=subject))
    assert raw.endswith(b"\r\n")
    assert raw.count(b"\n") == raw.count(b"\r\n") == raw.count(b"\r")
    plain, rich = parse(raw).iter_parts()
    assert lf(plain.get_content()) == text.replace("\r\n", "\n").replace("\r", "\n")
    assert lf(rich.get_content()) == html.replace("\r\n", "\n").replace("\r", "\n")


def _encodings(raw: bytes) -> list[str]:
    return [part["Content-Transfer-Encoding"] for part in parse(raw).iter_parts()]


def test_ascii_bodies_go_as_they_are():
    html = '<p style="margin: 0; padding: 0">' + "a=b " * 200 + "</p>  \n<p>.</p>\n.\n"
    text = "Hello Ada,\n" + "word " * 190 + "\n"
    raw = email(html=html, text=text)
    plain, rich = parse(raw).iter_parts()
    assert _encodings(raw) == ["7bit", "7bit"]
    assert lf(plain.get_content()) == text and lf(rich.get_content()) == html
    assert html.replace("\n", "\r\n").encode() in raw  # not one byte changed but the line ends


def _boundary_line() -> str:
    return "--=_" + hashlib.sha256(MID.encode()).hexdigest()[:24] + "\n"


@pytest.mark.parametrize("body", [
    pytest.param("x" * 999 + "\n", id="a line over 998 octets"),
    pytest.param("before\n{boundary}after\n", id="the message's own boundary"),
    pytest.param("nul \x00 byte\n", id="a NUL"),
    pytest.param("café\n", id="non-ASCII"),
])
def test_bodies_that_are_not_7bit_as_they_are_are_encoded(body):
    body = body.replace("{boundary}", _boundary_line())
    raw = email(html=body, text=body)
    assert _encodings(raw) == ["quoted-printable", "quoted-printable"]
    msg = parse(raw)
    assert [lf(p.get_content()) for p in msg.iter_parts()] == [body, body]
    assert not msg.defects


@pytest.mark.parametrize(
    "field, value",
    [
        ("subject", "Hello\r\nBcc: victim@example.com"),
        ("subject", "Hello\nBcc: victim@example.com"),
        ("subject", "Hello\rthere"),
        ("subject", "Null\x00byte"),
        ("subject", "Line\u2028separator"),
        ("subject", "=?utf-8?q?a=0D=0ABcc:_victim@example.com?="),
        ("subject", "=?UTF-8?Q?a=0Ab?="),
        ("subject", "=?utf-8?b?YQ0KQmNjOiB2aWN0aW1AZXhhbXBsZS5jb20=?="),
        ("to_addr", "zoe@example.com\r\nBcc: victim@example.com"),
        ("to_addr", ("Zoë\r\nBcc: victim@example.com", "zoe@example.com")),
        ("to_addr", ("=?utf-8?q?Z=0D=0ABcc:_v@example.com?=", "zoe@example.com")),
        ("from_addr", "Acme\n <noreply@acme.example>"),
        ("reply_to", "john@acme.example\nBcc: victim@example.com"),
        ("list_unsubscribe", "https://acme.example/u\r\nBcc: victim@example.com"),
        ("list_unsubscribe", "https://acme.example/u%0d%0aBcc:%20victim@example.com"),
        ("list_unsubscribe", "https://acme.example/u%0ABcc"),
        ("message_id", "<a@b.example>\r\nBcc: victim@example.com"),
        ("extra_headers", {"X-Tag": "a\r\nBcc: victim@example.com"}),
        ("extra_headers", {"X-Tag": "=?utf-8?b?DQo=?="}),
        ("extra_headers", {"X-Tag\r\nBcc": "x"}),
        ("extra_headers", {"X Tag": "x"}),
    ],
)
def test_header_injection_is_refused(field, value):
    with pytest.raises(HeaderInjection):
        email(**{field: value})


@pytest.mark.parametrize(
    "address",
    ["no-at-sign", "two@@example.com", "a@b@example.com", "a@localhost", "a b@example.com",
     "a@example.com, b@example.com", "", "zoë@example.com", ".a@example.com", "a..b@example.com",
     "a@-example.com"],
)
def test_bad_addresses_are_refused(address):
    with pytest.raises(InvalidAddress):
        email(to_addr=address)


def test_address_helpers():
    assert parse_address("Zoë <zoe@example.com>") == ("Zoë", "zoe@example.com")
    assert parse_address(("", "a.b+tag@sub.example.co.uk")) == ("", "a.b+tag@sub.example.co.uk")
    assert is_valid_address("zoe@example.com")
    assert not is_valid_address("Zoë <zoe@example.com>")
    assert not is_valid_address("zoe@example")


def test_other_unusable_values_are_refused():
    with pytest.raises(RenderError, match="set by the message builder"):
        email(extra_headers={"from": "evil@example.com"})
    with pytest.raises(RenderError, match="Message-ID"):
        email(message_id="no-angle-brackets@acme.example")
    with pytest.raises(RenderError, match="List-Unsubscribe"):
        email(list_unsubscribe="javascript:alert(1)")
    with pytest.raises(RenderError, match="List-Unsubscribe"):
        email(list_unsubscribe="https://acme.example/u>, <https://evil.example/")


def test_non_ascii_unsubscribe_url_is_percent_encoded():
    msg = parse(email(list_unsubscribe="https://acme.example/afmeld/Ørsted"))
    assert msg["List-Unsubscribe"] == "<https://acme.example/afmeld/%C3%98rsted>"


def test_stable_message_id_is_deterministic_per_pair():
    first = stable_message_id("fab657f1", "98388685", "acme.example")
    assert first == stable_message_id("fab657f1", "98388685", "ACME.example")
    assert first != stable_message_id("fab657f1", "98388686", "acme.example")
    assert first != stable_message_id("fab657f2", "98388685", "acme.example")
    assert first != stable_message_id("fab657f", "198388685", "acme.example")
    assert first.startswith("<") and first.endswith("@acme.example>")
    assert parse(email(message_id=first))["Message-ID"] == first
    with pytest.raises(InvalidAddress):
        stable_message_id("c", "k", "acme.example>\r\nBcc: x")


def test_same_input_gives_the_same_bytes():
    when = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)
    assert email(date=when) == email(date=when)


def test_a_rendered_campaign_becomes_a_readable_email():
    from renderers.context import build_context
    from renderers.templating import compile_campaign

    campaign = compile_campaign(
        "Tilbud til {{ contact.first_name }}",
        "<p>Hej {{ contact.first_name }} {{ contact.custom_fields.nickname }},</p>"
        '<p><a href="https://acme.example/offer">Se tilbuddet</a></p>',
        "<html><body>{{ content }}</body></html>",
    )
    unsubscribe = "https://acme.example/unsubscribe?c=fab657f1&k=98388685"
    context = build_context(
        {"id": "98388685", "fixed_fields": {"first_name": "Zoë <b>"}, "custom_fields": {}},
        {"id": "fab657f1", "name": "Spring"}, None, unsubscribe, fixed_field_names=["first_name"],
    )
    rendered = campaign.render(context)
    msg = parse(build_email(
        from_addr="noreply@acme.example", to_addr=("Zoë", "zoe@example.com"),
        subject=rendered.subject, html=rendered.html, text=rendered.text,
        message_id=stable_message_id("fab657f1", "98388685", "acme.example"),
        list_unsubscribe=unsubscribe,
    ))
    assert msg["Subject"] == "Tilbud til Zoë <b>"
    assert msg["List-Unsubscribe"] == f"<{unsubscribe}>"
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    assert "Hej Zoë &lt;b&gt; ," in html
    assert 'href="https://acme.example/unsubscribe?c=fab657f1&amp;k=98388685"' in html
    assert lf(text) == (
        "Hej Zoë <b> ,\n\nSe tilbuddet (https://acme.example/offer)\n\n"
        f"Unsubscribe: {unsubscribe}\n"
    )


# --- EmailFrame: what a campaign shares, checked once; each recipient's values checked per message

FROM = "Acme News <news@acme.example>"
REPLY = "john@acme.example"


def personal(**overrides):
    """One recipient's values for ``EmailFrame.build``."""
    args = dict(to_addr="person1@example.com", subject="Zoë, spring is here", html=HTML, text=TEXT,
                message_id=stable_message_id("fab657f1", "98388685", "acme.example"),
                list_unsubscribe="https://acme.example/unsub?contact=98388685&campaign=fab657f1")
    args.update(overrides)
    return args


def test_a_frame_builds_the_same_bytes_as_build_email():
    when = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)
    extras = {"X-Campaign-Id": "fab657f1"}
    frame = EmailFrame(from_addr=FROM, reply_to=REPLY, extra_headers=extras)
    assert frame.build(**personal(date=when)) == build_email(
        from_addr=FROM, reply_to=REPLY, extra_headers=extras, date=when, **personal())


@pytest.mark.parametrize(
    "field, value",
    [
        ("subject", "Hello\r\nBcc: victim@example.com"),
        ("subject", "=?utf-8?b?YQ0KQmNjOiB2aWN0aW1AZXhhbXBsZS5jb20=?="),
        ("to_addr", "zoe@example.com\r\nBcc: victim@example.com"),
        ("to_addr", ("=?utf-8?q?Z=0D=0ABcc:_v@example.com?=", "zoe@example.com")),
        ("list_unsubscribe", "https://acme.example/u%0d%0aBcc:%20victim@example.com"),
        ("message_id", "<a@b.example>\r\nBcc: victim@example.com"),
    ],
)
def test_a_frame_refuses_an_injection_in_one_recipients_values(field, value):
    frame = EmailFrame(from_addr=FROM, reply_to=REPLY)
    with pytest.raises(HeaderInjection):
        frame.build(**personal(**{field: value}))
    # only that message: the next recipient's is built from the same frame
    assert parse(frame.build(**personal()))["To"].addresses[0].addr_spec == "person1@example.com"


@pytest.mark.parametrize(
    "sender, error",
    [
        (dict(from_addr="Acme\n <noreply@acme.example>"), HeaderInjection),
        (dict(from_addr=("Acme\r\nBcc: victim@example.com", "news@acme.example")), HeaderInjection),
        (dict(from_addr=("=?utf-8?q?A=0D=0ABcc:_v@example.com?=", "news@acme.example")), HeaderInjection),
        (dict(from_addr=FROM, reply_to="john@acme.example\nBcc: victim@example.com"), HeaderInjection),
        (dict(from_addr="news@localhost"), InvalidAddress),
        (dict(from_addr=FROM, reply_to="a@example.com, b@example.com"), InvalidAddress),
    ],
)
def test_a_bad_sender_is_refused_when_the_frame_is_built(sender, error):
    with pytest.raises(error):
        EmailFrame(**sender)


def test_bad_extra_headers_are_refused_when_the_frame_is_built():
    with pytest.raises(HeaderInjection):
        EmailFrame(from_addr=FROM, extra_headers={"X-Tag": "a\r\nBcc: victim@example.com"})
    with pytest.raises(RenderError, match="set by the message builder"):
        EmailFrame(from_addr=FROM, extra_headers={"Reply-To": "evil@example.com"})


def test_two_messages_from_one_frame_differ_only_in_their_personal_parts():
    frame = EmailFrame(from_addr=FROM, reply_to=REPLY, extra_headers={"X-Campaign-Id": "fab657f1"})
    first = parse(frame.build(**personal()))
    second = parse(frame.build(**personal(
        to_addr=("Søren", "soren@example.com"), subject="Søren, spring is here", html="<p>Hej Søren</p>",
        text="Hej Søren\n", message_id=stable_message_id("fab657f1", "98388686", "acme.example"),
        list_unsubscribe="https://acme.example/unsub?contact=98388686&campaign=fab657f1",
        date=datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc))))
    assert first.keys() == second.keys()  # the same headers in the same order
    changed = {name for name in first.keys() if first[name] != second[name]}
    assert changed == {"To", "Subject", "Date", "Message-ID", "List-Unsubscribe", "Content-Type"}  # boundary
    assert second["To"].addresses[0].addr_spec == "soren@example.com"
    assert second["Subject"] == "Søren, spring is here"
    assert lf(second.get_body(("plain",)).get_content()) == "Hej Søren\n"
    assert lf(first.get_body(("html",)).get_content()) == HTML
    assert first["From"] == second["From"] == "Acme News <news@acme.example>"


def test_date_is_the_time_of_building():
    before = datetime.now(timezone.utc).replace(microsecond=0)
    sent = parse(EmailFrame(from_addr=FROM).build(**personal()))["Date"].datetime
    assert before <= sent <= datetime.now(timezone.utc)


def test_date_moves_on_with_the_clock(monkeypatch):
    # formatted once per second: the next second gets its own text, not the cached one
    second = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)
    clock = SimpleNamespace(time=lambda: second.timestamp() + 0.25)
    monkeypatch.setattr(mime, "time", clock)
    frame = EmailFrame(from_addr=FROM)
    assert parse(frame.build(**personal()))["Date"].datetime == second
    clock.time = lambda: second.timestamp() + 1.75
    assert parse(frame.build(**personal()))["Date"].datetime == second + timedelta(seconds=1)


def test_stable_message_ids_never_change():
    # a resend after a crash must carry the Message-ID of the first attempt, across releases too
    assert stable_message_id("fab657f1", "98388685", "acme.example") == (
        "<bf9877a31701575a9509a005e9fac38a@acme.example>")
    assert stable_message_id("5f0c7a3e-8a1b-4c2d-9e3f-112233445566", "test:zoë@example.com", "acme.example") == (
        "<7b53c7a77dc25883bfbba0acc4c49688@acme.example>")
    namespace = uuid.UUID("6f1c9a9e-3b7d-5a53-9d38-6c2d3f0e8b41")  # what they have always been: uuid5
    for campaign, contact in [("c", "k"), ("Zoë", "日本語"), ("", ""), ("fab657f1", "test:a@b.example")]:
        key = uuid.uuid5(namespace, f"{campaign}\x00{contact}").hex
        assert stable_message_id(campaign, contact, "acme.example") == f"<{key}@acme.example>"
