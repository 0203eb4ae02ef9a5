"""The archive: the exact content sent to each recipient, kept compressed in its ledger row.

A million-recipient campaign archives a million renderings of one template, which differ only in
their personal parts. Each is compressed on its own (any one reads back alone) with raw DEFLATE
primed with a dictionary made from the campaign's own sources (its content, subject and template):
the template's literal text is then found in the dictionary, and what is stored is mostly the
personal parts. The newsletter of ``benchmarks/ledger_bytes.py`` goes from 1,736 bytes to ~110.

The dictionary is made once, when the campaign fans out, and kept with the campaign: the template
may be edited later, the archive still reads back. The first byte of a stored value says how the
rest is encoded, so values written without a dictionary (campaigns fanned out before there was
one, or content migrated from the old table) stay readable beside the others.
"""

from __future__ import annotations

import zlib

PLAIN = 0  # UTF-8 as is
DEFLATE = 1  # raw DEFLATE, no dictionary
DEFLATE_DICTIONARY = 2  # raw DEFLATE primed with the campaign's dictionary

_WINDOW = 32 * 1024  # DEFLATE looks back this far: a longer dictionary only costs its priming
# Level 3: ~8 us a message against ~10 at zlib's default (6); the newsletter of
# benchmarks/ledger_bytes.py is stored in 74 bytes (79 at 6). Level 1 is no faster and stores more.
_LEVEL = 3


def dictionary_for(*sources: str | None) -> bytes:
    """A DEFLATE dictionary from a campaign's sources (content, subject, template): their text,
    the template last (DEFLATE finds the nearest matches cheapest), at most the window's size."""
    joined = "\n".join(s for s in sources if s).encode()
    return joined[-_WINDOW:]


class Packer:
    """Compresses one campaign's archived contents with its dictionary (None: without one)."""

    def __init__(self, dictionary: bytes | None) -> None:
        self.dictionary = dictionary or None
        self._tag = bytes([DEFLATE_DICTIONARY if self.dictionary else DEFLATE])

    def pack(self, content: str) -> bytes:
        """The stored form of ``content``."""
        # A fresh compressor each time measured faster than copying a primed one (~7 against ~10 us).
        if self.dictionary:
            compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15, zdict=self.dictionary)
        else:
            compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15)
        return self._tag + compressor.compress(content.encode()) + compressor.flush()


def unpack(stored: bytes, dictionary: bytes | None) -> str:
    """The content as sent, from its stored form and its campaign's dictionary."""
    tag, body = stored[0], bytes(stored[1:])
    if tag == PLAIN:
        return body.decode()
    if tag == DEFLATE:
        decompressor = zlib.decompressobj(-15)
    elif tag == DEFLATE_DICTIONARY:
        if not dictionary:
            raise ValueError("an archived content needs its campaign's dictionary, which is missing")
        decompressor = zlib.decompressobj(-15, zdict=dictionary)
    else:
        raise ValueError(f"unknown archive encoding {tag}")
    return (decompressor.decompress(body) + decompressor.flush()).decode()
