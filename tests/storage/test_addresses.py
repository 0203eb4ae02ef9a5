"""One address rule: what storage accepts (validation, fan-out skips, the re-check) the message
builder's header gate accepts too, so no recipient that passed fan-out fails to build."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from renderers.mime import is_valid_address
from storage.addresses import is_email

LOCAL = st.text(string.ascii_letters + string.digits + ".!#$%&'*+/=?^_`{|}~-\"@ ", min_size=1, max_size=70)
LABEL = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=65)
DOMAIN = st.lists(LABEL, min_size=1, max_size=4).map(".".join)


@settings(max_examples=600, deadline=None)
@given(LOCAL, DOMAIN)
def test_every_address_storage_accepts_passes_the_header_gate(local, domain):
    address = f"{local}@{domain}"
    if is_email(address):
        assert is_valid_address(address), address


@pytest.mark.parametrize("address, usable", [
    ("jane@example.com", True),
    ("jane.o'neil+news@mail.example.co", True),
    ("a" * 64 + "@example.com", True),
    ("a" * 65 + "@example.com", False),       # local part over 64
    ("jane..doe@example.com", False),         # empty atom
    (".jane@example.com", False),
    ("jane.@example.com", False),
    ("jane@example.c", False),                # one-letter top-level label
    ("jane@-example.com", False),
    ("jane@example-.com", False),
    ("jane@example", False),                  # not dotted
    ("jane@exa_mple.com", False),
    ("jøne@example.com", False),              # no SMTPUTF8
    ("jane@example.com\n", False),
    ("x" * 240 + "@example.com", False),      # local part over 64 (and 252 in all)
    ("x@" + "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61 + ".io", False),  # 259 in all
])
def test_the_rule(address, usable):
    assert is_email(address) is usable
