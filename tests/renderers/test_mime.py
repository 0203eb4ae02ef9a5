"""Email bytes: parsed back with the standard library, headers and parts as a mail client sees them."""

from __future__ import annotations

from datetime import datetime, timezone
from email import policy
from email.parser import BytesParser

import pytest

from renderers.errors import HeaderInjection, InvalidAddress, RenderError
from renderers.mime import build_email, is_valid_address, parse_address, stable_message_id

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
