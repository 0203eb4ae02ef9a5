"""Archived contents read back exactly as sent, and take a fraction of the room."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.archive import DEFLATE, DEFLATE_DICTIONARY, PLAIN, Packer, dictionary_for, unpack

TEMPLATE = "<html><body><table><tr><td>{{ content }}</td></tr></table><p>Acme Outdoor A/S</p></body></html>"
CONTENT = "<h1>Hello {{ contact.first_name }}</h1><p>Spring is here, with 20% off everything until Sunday.</p>"


def rendered(name: str) -> str:
    return TEMPLATE.replace("{{ content }}", CONTENT.replace("{{ contact.first_name }}", name))


@given(st.text(), st.binary(max_size=300))
def test_any_text_reads_back_with_or_without_a_dictionary(content, dictionary):
    assert unpack(Packer(dictionary).pack(content), dictionary) == content
    assert unpack(Packer(None).pack(content), None) == content


def test_the_first_byte_says_how_it_was_stored_and_old_forms_stay_readable():
    dictionary = dictionary_for("subject", CONTENT, TEMPLATE)
    assert Packer(dictionary).pack("x")[0] == DEFLATE_DICTIONARY
    assert Packer(None).pack("x")[0] == DEFLATE
    assert unpack(bytes([PLAIN]) + "Zoë".encode(), None) == "Zoë"


def test_a_campaigns_messages_take_a_fraction_of_their_size_with_its_dictionary():
    dictionary = dictionary_for("Spring", CONTENT, TEMPLATE)
    message = rendered("Søren").encode()
    with_dictionary = len(Packer(dictionary).pack(rendered("Søren")))
    without = len(Packer(None).pack(rendered("Søren")))
    assert with_dictionary < without < len(message)
    assert with_dictionary < len(message) / 4


def test_a_dictionary_is_at_most_deflates_window_and_keeps_the_last_sources():
    dictionary = dictionary_for("a" * 40_000, "the template")
    assert len(dictionary) == 32 * 1024 and dictionary.endswith(b"\nthe template")
    assert dictionary_for(None, "", "t") == b"t"


def test_a_missing_dictionary_or_an_unknown_form_is_an_error_not_garbage():
    stored = Packer(b"some dictionary").pack("hello")
    with pytest.raises(ValueError, match="dictionary"):
        unpack(stored, None)
    with pytest.raises(ValueError, match="unknown archive encoding 9"):
        unpack(b"\x09abc", None)


def test_one_packer_serves_many_threads_at_once():
    # The workers' render threads share their campaign's Packer: each compresses with a copy of one
    # primed compressor, and every content reads back as itself, the same bytes as packed alone.
    from concurrent.futures import ThreadPoolExecutor

    dictionary = dictionary_for("Spring", CONTENT, TEMPLATE)
    shared = Packer(dictionary)
    names = [f"Søren {n}" for n in range(2000)]
    with ThreadPoolExecutor(8) as pool:
        stored = list(pool.map(lambda name: shared.pack(rendered(name)), names))
    assert [unpack(value, dictionary) for value in stored] == [rendered(name) for name in names]
    assert stored == [Packer(dictionary).pack(rendered(name)) for name in names]
