"""DKIM signatures made by renderers.dkim, checked by dkimpy's verifier against a stub DNS, and its parse,
canonicalisation and header hash checked against dkimpy's own functions on generated messages."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import dkim
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy
from dkim.util import parse_tag_value
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import renderers.dkim as dkim_module
from renderers.dkim import DkimKeyError, DkimSigner, DkimSigningError, load_keys
from renderers.mime import build_email
from tests.dkimkeys import StubDns, write_ed25519_key, write_rsa_key

DOMAIN = "acme.example"
RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
LONG_SUBJECT = "Forårstilbud til Zoë Ørsted: " + "rabat på café-kaffe og æblekage " * 6


def message(**overrides) -> bytes:
    args = dict(
        from_addr=("Acme Ø Nyheder", f"news@{DOMAIN}"), to_addr="Zoë Ørsted <zoe@example.com>",
        subject=LONG_SUBJECT, html="<p>Hej Zoë, café é – søndag</p>" * 20, text="Hej Zoë, café é – søndag\n" * 20,
        message_id=f"<0b8f1c4e9a5d4f7e8c1b2a3d4e5f6a7b@{DOMAIN}>", reply_to="Søren <soren@example.com>",
        list_unsubscribe="https://acme.example/unsubscribe?contact=c1&campaign=k1",
    )
    args.update(overrides)
    return build_email(**args)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, StubDns]:
    """One RSA-2048 and one ed25519 key for acme.example, plus an RSA key for another domain."""
    folder = tmp_path_factory.mktemp("dkim")
    dns = StubDns()
    write_rsa_key(folder, "rsa2026", DOMAIN, dns)
    write_ed25519_key(folder, "ed2026", DOMAIN, dns)
    write_rsa_key(folder, "other", "other.example", dns, bits=1024)
    (folder / "rsa2026.acme.example.txt").write_text("the DNS record, kept beside the key: not a key")
    (folder / "..data").mkdir()  # as in a mounted Kubernetes Secret
    return folder, dns


@pytest.fixture(scope="module")
def all_keys(keys) -> DkimSigner:
    """``keys`` loaded once (loading an RSA key checks it: slow for a test run hundreds of times)."""
    return load_keys(keys[0])


def only(folder: Path, tmp_path: Path, *names: str) -> Path:
    """A directory holding copies of some of ``folder``'s keys."""
    for name in names:
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    return tmp_path


def signature_tags(signed: bytes) -> list[dict[str, str]]:
    """The tags of each DKIM-Signature, whitespace removed (as folded lines join)."""
    return [{name.decode(): re.sub(r"\s+", "", value.decode()) for name, value in parse_tag_value(value).items()}
            for name, value in dkim.DKIM(signed).headers if name.lower() == b"dkim-signature"]


def test_rsa_signature_verifies_and_covers_the_headers(keys, tmp_path):
    folder, dns = keys
    signer = load_keys(only(folder, tmp_path, "rsa2026.acme.example.pem"))
    original = message()
    signed = signer.sign(original)
    assert signed.startswith(b"DKIM-Signature: ") and signed.endswith(original)
    assert b"\n" not in signed.replace(b"\r\n", b"")  # CRLF kept, no bare LF added
    assert dns.verify(signed) == [True]
    [tags] = signature_tags(signed)
    assert (tags["a"], tags["c"], tags["d"], tags["s"]) == ("rsa-sha256", "relaxed/relaxed", DOMAIN, "rsa2026")
    signed_names = tags["h"].split(":")
    for name in ("from", "to", "subject", "date", "message-id", "reply-to", "mime-version", "content-type",
                 "list-unsubscribe", "list-unsubscribe-post"):
        assert signed_names.count(name) == 2, name  # present, and oversigned against an added copy


def test_a_4096_bit_rsa_signature_verifies_with_every_line_within_the_limit(tmp_path):
    dns = StubDns()
    write_rsa_key(tmp_path, "big", DOMAIN, dns, bits=4096)
    signed = load_keys(tmp_path).sign(message())
    assert dns.verify(signed) == [True]
    assert max(len(line) for line in signed.split(b"\r\n")) <= 998  # RFC 5322's line limit


def test_ed25519_signature_verifies(keys, tmp_path):
    folder, dns = keys
    signer = load_keys(only(folder, tmp_path, "ed2026.acme.example.ed25519"))
    signed = signer.sign(message(list_unsubscribe=None, reply_to=None))
    assert dns.verify(signed) == [True]
    [tags] = signature_tags(signed)
    assert (tags["a"], tags["s"]) == ("ed25519-sha256", "ed2026")
    assert "list-unsubscribe" not in tags["h"] and "reply-to" not in tags["h"]


def test_every_key_of_the_domain_signs(keys):
    folder, dns = keys
    signer = load_keys(folder)
    signed = signer.sign(message())
    assert sorted(tags["s"] for tags in signature_tags(signed)) == ["ed2026", "rsa2026"]
    assert dns.verify(signed) == [True, True]


def test_relaxed_canonicalisation_survives_a_relay_rewrapping_whitespace(keys):
    folder, dns = keys
    signed = load_keys(folder).sign(message())
    rewrapped = signed.replace(b"\r\nTo: ", b"\r\nTo:    ").replace(b"\r\nMIME-Version: 1.0", b"\r\nMIME-Version:\t1.0")
    assert rewrapped != signed and dns.verify(rewrapped) == [True, True]


@pytest.mark.parametrize("tamper", [
    lambda m: m.replace(b"Hej Zo", b"Hej Jo", 1),
    lambda m: m.replace(b"\r\nMessage-ID: <0b", b"\r\nMessage-ID: <1b"),
    lambda m: m.replace(b"\r\nDate: ", b"\r\nSubject: Another subject\r\nDate: "),  # an added second Subject
    lambda m: m.replace(b"https://acme.example/unsubscribe", b"https://evil.example/unsubscribe"),
], ids=["body", "message-id", "added-subject", "list-unsubscribe"])
def test_a_changed_message_fails(keys, tamper):
    folder, dns = keys
    signed = load_keys(folder).sign(message())
    changed = tamper(signed)
    assert changed != signed
    assert dns.verify(changed) == [False, False]


def test_mail_from_a_domain_without_a_key_goes_unsigned(keys):
    folder, _dns = keys
    signer = load_keys(folder)
    original = message(from_addr="news@elsewhere.example", message_id="<a@elsewhere.example>")
    assert signer.sign(original) is original
    assert signer.sign(original, "elsewhere.example") is original
    ours = message()
    assert DkimSigner([]).sign(ours) is ours  # no keys at all
    assert not signer.signs("elsewhere.example") and signer.signs("ACME.example")


def test_the_caller_may_name_the_from_domain(keys, tmp_path):
    folder, dns = keys
    signer = load_keys(only(folder, tmp_path, "rsa2026.acme.example.pem"))
    signed = signer.sign(message(), "Acme.Example")
    assert dns.verify(signed) == [True]


def test_a_key_saved_with_crlf_line_ends_loads(keys, tmp_path):
    folder, dns = keys
    pem = (folder / "rsa2026.acme.example.pem").read_bytes()
    (tmp_path / "rsa2026.acme.example.pem").write_bytes(pem.replace(b"\n", b"\r\n"))
    assert dns.verify(load_keys(tmp_path).sign(message())) == [True]


def test_keys_never_show_in_a_repr(keys):
    folder, _dns = keys
    signer = load_keys(folder)
    pem = (folder / "rsa2026.acme.example.pem").read_text()
    body_line = pem.splitlines()[1]
    shown = repr(signer) + "".join(repr(key) for key in signer.keys)
    assert body_line not in shown and "rsa2026._domainkey.acme.example" in shown


def _refused(folder: Path) -> str:
    with pytest.raises(DkimKeyError) as caught:
        load_keys(folder)
    return str(caught.value)


@pytest.mark.parametrize("name, content", [
    ("s1.acme.example.pem", None),  # a real key cut short
    ("s1.acme.example.pem", b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n"),
    ("s1.acme.example.pem", b"hello, I am not a key\n"),
    ("s1.acme.example.ed25519", b"c2hvcnQ=\n"),
    ("s1.acme.example.ed25519", b"!!!! not base64 at all !!!!\n"),
])
def test_a_bad_key_file_is_refused_naming_the_file_not_its_content(keys, tmp_path, name, content):
    folder, _dns = keys
    if content is None:
        content = (folder / "rsa2026.acme.example.pem").read_bytes()[:700] + b"\n-----END PRIVATE KEY-----\n"
    (tmp_path / name).write_bytes(content)
    said = _refused(tmp_path)
    assert str(tmp_path / name) in said
    for line in content.decode("ascii").splitlines():
        if len(line) > 8 and not line.startswith("-----"):
            assert line not in said


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_a_short_rsa_key_is_refused(tmp_path):
    # cryptography will not make a key this short: openssl will (as a careless `genrsa 512` would)
    subprocess.run(["openssl", "genrsa", "-out", str(tmp_path / "weak.acme.example.pem"), "512"],
                   check=True, capture_output=True)
    said = _refused(tmp_path)
    assert "weak.acme.example.pem" in said and "512 bits" in said


@pytest.mark.parametrize("name", ["acme.pem", "bad_selector!.acme.example.pem", "s1.not_a_domain.pem"])
def test_a_key_file_named_without_selector_and_domain_is_refused(tmp_path, name):
    (tmp_path / name).write_bytes(b"whatever")
    assert name in _refused(tmp_path)


def test_a_missing_directory_is_refused(tmp_path):
    assert "does not exist" in _refused(tmp_path / "nowhere")
    (tmp_path / "file").write_text("")
    assert "is not a directory" in _refused(tmp_path / "file")


def test_other_files_and_hidden_entries_are_left_alone(keys):
    folder, _dns = keys
    assert sorted(key.record_name for key in load_keys(folder).keys) == [
        "ed2026._domainkey.acme.example", "other._domainkey.other.example", "rsa2026._domainkey.acme.example"]


@pytest.mark.parametrize("body", [
    b"<p>one space only</p>\r\n",  # no tab, no double space, no space before a line end: the quick path
    b"<p>two  spaces\tand a tab</p> \r\nnext \t line\r\n\r\n\r\n",  # every whitespace rewrite
    b"bare\nline ends\r\nmixed in\n",  # not all CRLF: dkimpy parses the whole message
    b"",
], ids=["quick", "whitespace", "bare-lf", "empty"])
def test_every_kind_of_body_is_signed_as_dkimpy_hashes_it(keys, body):
    folder, dns = keys
    head = message().partition(b"\r\n\r\n")[0]
    plain = head.replace(b"multipart/alternative", b"text/plain").split(b"; boundary")[0] + b"\r\n\r\n" + body
    assert dns.verify(load_keys(folder).sign(plain)) == [True, True]


def test_line_ends_vouched_for_sign_the_same_bytes(keys, all_keys, monkeypatch):
    _, dns = keys
    monkeypatch.setattr(dkim_module, "time", SimpleNamespace(time=lambda: 1_795_000_000))  # one t= for both
    built = message()
    vouched = all_keys.sign(built, DOMAIN, crlf=True)
    assert vouched == all_keys.sign(built, DOMAIN)  # RSA PKCS#1 v1.5 and Ed25519 are deterministic
    assert dns.verify(vouched) == [True, True]


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from([b"a", b" ", b"  ", b"\t", b" \t", b"\r\n", b"\n", b"\r", b"=", b"\xc3\xb8"]),
                max_size=40))
def test_the_quick_parse_and_canonical_body_are_dkimpys(pieces):
    body = b"".join(pieces)
    message = b"From: a@acme.example\r\nSubject: s\r\n\r\n" + body
    headers, parsed_body = dkim_module._parse(message)
    assert (headers, parsed_body) == tuple(dkim.rfc822_parse(message))
    assert dkim_module._canonical_body(parsed_body) == RELAXED.canonicalize_body(parsed_body)


# Header lines as a sender or a careless template may write them: fields of any case, folds by a space
# or a tab, an mbox "From " line, and lines dkimpy refuses (no colon, a space or DEL in the name).
HEAD_LINES = st.sampled_from([
    b"From: a@acme.example", b"from:b@acme.example", b"Subject: s  t\t", b"Subject:", b"X-Odd_Name~: v",
    b" folded", b"\tfolded  more", b"  ", b"From mbox line", b"Fromage", b"no colon here", b"Bad Name: v", b"X\x7f: v",
    b": empty name", b"To: Zo\xc3\xab <z@example.com>", b"Date: Mon,\r", b"",
])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(HEAD_LINES, st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r\r\n"])), max_size=8),
       st.sampled_from([b"\r\n", b"\n", b""]),
       st.lists(st.sampled_from([b"a", b" ", b"\r\n", b"\n", b"\r"]), max_size=8))
def test_the_header_parse_is_dkimpys(lines, blank, body):
    # mostly CRLF line ends (the quick parse), some bare LF or an extra CR (dkimpy's parse)
    message = b"".join(line + end for line, end in lines) + blank + b"".join(body)
    try:
        expected = tuple(dkim.rfc822_parse(message))
    except (dkim.MessageFormatError, IndexError):  # IndexError: a fold before any field
        with pytest.raises(dkim.MessageFormatError):
            dkim_module._parse(message)
    else:
        assert dkim_module._parse(message) == expected


HEADER_VALUE = st.lists(st.sampled_from([
    b"a", b"Zo\xc3\xab", b" ", b"  ", b"\t", b"\r\n ", b"\r\n\t", b"\n ", b"\r", b"\x0b", b";", b":", b"=?utf-8?q?x?=",
]), max_size=12).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(HEADER_VALUE)
def test_a_relaxed_header_value_is_dkimpys(value):
    value += b"\r\n"  # as parsed: every value ends in CRLF
    assert dkim_module._relaxed_value(value) == RELAXED.canonicalize_headers([(b"X", value)])[0][1]


class Recorder:
    """A hasher that keeps what it is given, for dkimpy's ``hash_headers``."""

    def __init__(self) -> None:
        self.data = b""

    def update(self, data: bytes) -> None:
        self.data += data


HEADER_NAME = st.sampled_from([
    b"From", b"FROM", b"to", b"Subject", b"Date", b"Message-ID", b"Reply-To", b"MIME-Version", b"Content-Type",
    b"List-Unsubscribe", b"List-Unsubscribe-Post", b"X-Mailer", b"Received",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(HEADER_NAME, HEADER_VALUE), max_size=14))
def test_the_signed_header_fields_are_hashed_as_dkimpy_hashes_them(fields):
    headers = [[name, value + b"\r\n"] for name, value in fields]
    signed, names = dkim_module._signed_headers(headers)
    present = [name for name in dkim_module.SIGNED_HEADERS if name in {n.lower() for n, _ in headers}]
    include = names.split(b" : ") if names else []
    assert include == present + present  # each present signed field named twice, in SIGNED_HEADERS' order
    recorder = Recorder()
    dkim.hash_headers(recorder, RELAXED, RELAXED.canonicalize_headers(headers), include,
                      (b"DKIM-Signature", b" v=1; h=" + names + b"; b="), {})
    assert recorder.data == signed + b"dkim-signature:v=1; h=" + names + b"; b="


def dkimpy_signatures(message: bytes, signer: DkimSigner, timestamp: bytes) -> bytes:
    """The DKIM-Signature headers of ``signer``'s acme.example keys as dkimpy's own functions make
    them (its parse, canonicalisation, header selection and ``hash_headers``, as its ``DKIM.sign``
    uses them), in renderers.dkim's layout of the tags."""
    headers, body = dkim.rfc822_parse(message)
    present = {name.lower() for name, _value in headers}
    include = [name for name in dkim_module.SIGNED_HEADERS if name in present]
    include += include
    canonical = RELAXED.canonicalize_headers(headers)
    body_hash = base64.b64encode(hashlib.sha256(RELAXED.canonicalize_body(body)).digest())
    made = b""
    for key in signer.keys:
        if key.domain != DOMAIN:
            continue
        domain = key.domain.encode()
        tags = [(b"v", b"1"), (b"a", key.algorithm.encode()), (b"c", b"relaxed/relaxed"), (b"d", domain),
                (b"i", b"@" + domain), (b"q", b"dns/txt"), (b"s", key.selector.encode()), (b"t", timestamp),
                (b"h", b" : ".join(include)), (b"bh", body_hash), (b"b", b"")]
        unsigned = b"; ".join(name + b"=" + value for name, value in tags)
        digest = hashlib.sha256()
        dkim.hash_headers(digest, RELAXED, canonical, include, (b"DKIM-Signature", b" " + unsigned), dict(tags))
        if key.algorithm == "rsa-sha256":
            signature = key.private.sign(digest.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        else:
            signature = key.private.sign(digest.digest())
        made += b"DKIM-Signature: " + unsigned.replace(b"; ", b";\r\n ") + base64.b64encode(signature) + b"\r\n"
    return made


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(HEADER_NAME, HEADER_VALUE), min_size=1, max_size=10),
       st.lists(st.sampled_from([b"Hej Zo\xc3\xab", b" ", b"  ", b"\t", b"\r\n", b"\n", b"=20", b"-- "]), max_size=30))
def test_signatures_are_the_bytes_dkimpys_functions_sign_and_verify(keys, all_keys, fields, body):
    _folder, dns = keys
    message = b"".join(name + b":" + value + b"\r\n" for name, value in fields) + b"\r\n" + b"".join(body)
    signed = all_keys.sign(message, DOMAIN)
    timestamp = re.search(rb";\r\n t=(\d+);", signed).group(1)
    assert signed == dkimpy_signatures(message, all_keys, timestamp) + message  # RSA and Ed25519 are deterministic
    # dkimpy verifies only a signature covering From, and hashes one From field more than h= names
    # (against an added one): a message with more than two fails there, as a message has only one.
    if 1 <= sum(name.lower() == b"from" for name, _value in fields) <= 2:
        assert dns.verify(signed) == [True, True]


@pytest.mark.parametrize("head", [
    b"From: a@acme.example\r\nthis line is no header field\r\n",
    b" a fold before any field\r\nFrom: a@acme.example\r\n",
    b"From: a@acme.example\nthis line is no header field\n",  # bare LF: dkimpy parses it
    b"\ta fold before any field\nFrom: a@acme.example\n",
], ids=["bad-line", "fold-first", "bad-line-lf", "fold-first-lf"])
def test_a_message_with_a_broken_header_is_refused_without_quoting_it(all_keys, head):
    with pytest.raises(DkimSigningError) as caught:  # the old code let dkimpy's IndexError out on a fold first
        all_keys.sign(head + b"\r\nbody\r\n", DOMAIN)
    said = str(caught.value)
    assert "MessageFormatError" in said and "field" not in said and "acme" not in said
