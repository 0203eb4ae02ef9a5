"""Property: for any contact and any campaign type, the fan-out's SQL skip reason
(``storage.ledger.skip_reason``, a CASE in the INSERT ... SELECT) is the one its Python twin
(``storage.ledger.skip_reason_of``, re-checked before delivery) gives, on SQLite and on PostgreSQL."""

import string

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from storage.ledger import skip_reason, skip_reason_of
from storage.models import Contact

CAMPAIGN_TYPES = ("email", "letter", "telephone")
CONSENT = st.one_of(st.none(), st.booleans())

LOCAL_CHARS = string.ascii_letters + string.digits + ".!#$%&'*+/=?^_`{|}~-"
LABEL = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
DOMAIN = st.lists(LABEL, min_size=2, max_size=4).map(".".join)
PLAIN = st.builds(lambda local, domain: f"{local}@{domain}", st.text(LOCAL_CHARS, min_size=1, max_size=12), DOMAIN)


def _padded(address: str, length: int) -> str:
    """``address`` with its local part padded to ``length`` characters in all (around the 254 limit)."""
    return "x" * max(0, length - len(address)) + address


LONG = st.builds(_padded, PLAIN, st.integers(250, 300))
# Characters the plain rule refuses, or that regex dialects are known to read differently.
ODD = [" ", "\t", "\n", "\r", "\u00a0", "\u200b", "@", ".", "-", "ø", "é", "É", "ß", "İ", "ı", "\u212a", "ａ",
       "١", "\\", '"', "<", ">", "(", ")", ",", ";", ":", "[", "]", "\x7f", "\x01", "😀"]


@st.composite
def mutated(draw):
    """A plain address with one odd character put in, or one character taken out."""
    address = draw(st.one_of(PLAIN, LONG))
    at = draw(st.integers(0, len(address)))
    if draw(st.booleans()):
        return address[:at] + draw(st.sampled_from(ODD)) + address[at:]
    return address[:at] + address[at + 1:]


TRICKY = [
    "jane@example.com", "Jane.Doe+tag@Example.CO.uk", "a@b.co", "a.@example.com", ".a@example.com",
    "a..b@example.com", "a@example", "a@example.", "a@example.com.", "a@.example.com", "a@example..com",
    "a@-example.com", "a@example-.com", "a@ex_ample.com", "a@@example.com", "@example.com", "a@", "@", "a",
    " jane@example.com", "jane@example.com ", "ja ne@example.com", "jane @example.com", "jane@exa mple.com",
    "jane@example.com\n", "\njane@example.com", "jane\n@example.com", "<jane@example.com>", '"jane"@example.com',
    "jøns@example.com", "jane@exämple.com", "jane@xn--exmple-cua.com", "ｊａｎｅ@example.com", "\u212a@example.com",
    "١@example.com", "jane@example.c\u200bom", "jane@123.456", "jane@example.com,joe@example.com",
    "x" * 242 + "@example.com", "x" * 243 + "@example.com", "x" * 244 + "@example.com", "x" * 300 + "@example.com",
    "jane@" + "a" * 63 + "." + "b" * 200, " ", "\t",
    # labels at and over 63 characters, around the shortest address that can hold a long one (68)
    "j@" + "a" * 63 + ".com", "j@" + "a" * 64 + ".com", "j@b." + "c" * 63, "j@b." + "c" * 64,
    "j@b." + "c" * 62 + "-c", "jane@x." + "a" * 64 + ".com", "j@" + "a" * 62 + "-b.com", "j@" + "a" * 65 + ".co",
]
# Any text bar what the databases cannot hold (NUL; lone surrogates are not UTF-8).
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
EMAILS = st.one_of(st.none(), st.just(""), PLAIN, LONG, mutated(), st.sampled_from(TRICKY), ANY_TEXT)
TEXT_OR_BLANK = st.one_of(st.none(), st.sampled_from(["", " ", "\t", "0", "Vesterbrogade 1", "ø"]), ANY_TEXT)
PHONE = st.one_of(st.none(), st.sampled_from(["", " ", "+4520000000", "0"]), ANY_TEXT)

CONTACT = st.fixed_dictionaries({
    "consent_email": CONSENT,
    "consent_letter": CONSENT,
    "consent_call": CONSENT,
    "email": EMAILS,
    "address": TEXT_OR_BLANK,
    "mobile_phone_number": PHONE,
    "landline_phone_number": PHONE,
})


@settings(
    max_examples=150, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(contacts=st.lists(CONTACT, min_size=1, max_size=8))
def test_sql_skip_reason_is_the_python_one(sessions, contacts):
    # The db fixtures are per test, not per example: each example removes its own contacts.
    try:
        with sessions.begin() as session:
            session.add_all(Contact(id=f"k{i}", **values) for i, values in enumerate(contacts))
        with sessions() as session:
            loaded = {contact.id: contact for contact in session.scalars(select(Contact))}
            for campaign_type in CAMPAIGN_TYPES:
                in_sql = dict(session.execute(select(Contact.id, skip_reason(campaign_type))).all())
                in_python = {cid: skip_reason_of(campaign_type, contact) for cid, contact in loaded.items()}
                for cid in sorted(in_sql):
                    note(f"{campaign_type} {contacts[int(cid[1:])]!r}: sql={in_sql[cid]!r} python={in_python[cid]!r}")
                assert in_sql == in_python
    finally:
        with sessions.begin() as session:
            session.execute(delete(Contact))


def test_every_listed_tricky_address_gets_the_same_reason(sessions):
    """The listed edge cases (the 254-character limit among them) every time, not only when drawn."""
    contacts = [{"email": email} for email in TRICKY]
    with sessions.begin() as session:
        session.add_all(Contact(id=f"t{i}", **values) for i, values in enumerate(contacts))
    with sessions() as session:
        loaded = {contact.id: contact for contact in session.scalars(select(Contact))}
        in_sql = dict(session.execute(select(Contact.id, skip_reason("email"))).all())
    disagree = {TRICKY[int(cid[1:])]: (in_sql[cid], skip_reason_of("email", contact))
                for cid, contact in loaded.items() if in_sql[cid] != skip_reason_of("email", contact)}
    assert disagree == {}
