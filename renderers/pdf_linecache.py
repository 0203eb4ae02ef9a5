"""Line breaking remembered for the time of one layout: the same text, in the same computed style
and width, breaks into lines the same way in every letter of a batch.

WeasyPrint asks Pango for a text's first line (``split_first_line``) once per line of every text
box, and many times more for a table's column widths (each cell's min- and max-content width).
Letters laid out as one document (``pdf_batch``) repeat most of their text: everything but the
personal lines. Their elements share computed style objects, so the arguments are equal and the
answer can be looked up instead of asked of Pango again. On the benchmark's invoice letter (an item
table) that is about 9% less CPU per letter (21.8 -> 19.8 ms, batches alternating with and without it
in one process); on plain paragraphs 2-3%.

``split_first_line`` is a function of its arguments (text, computed style, layout context, widths,
flags): it reads nothing else and changes nothing the caller sees but the layout holder it returns,
which WeasyPrint mutates later when drawing (re-activated, justified). So each caller gets a copy of
the holder. Keys hold the style and context objects themselves, so their ids cannot be reused
while the cache lives; the cache lives for one ``remembering()`` block, one document.

It replaces the name in the two WeasyPrint modules that call it for layout, and only on the
WeasyPrint release it was read on (``_READ_ON``) with the same parameters; anywhere else layouts
run as WeasyPrint ships them. Tests hold letters laid out with and without it equal.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import weasyprint
from weasyprint.layout import inline, preferred
from weasyprint.text import line_break

_READ_ON = "70."
_PARAMETERS = ("text", "style", "context", "max_width", "justification_spacing", "is_line_start",
               "minimum")
_split_first_line = line_break.split_first_line
_state = threading.local()

ENABLED = True
"""False lays every document out without the memo (the tests compare both)."""


def _remembered_split(text: str, style: Any, context: Any, max_width: Any, justification_spacing: Any,
                      is_line_start: bool = True, minimum: bool = False) -> tuple:
    cache = getattr(_state, "cache", None)
    if cache is None:
        return _split_first_line(text, style, context, max_width, justification_spacing,
                                 is_line_start, minimum)
    key = (text, id(style), id(context), max_width, justification_spacing, is_line_start, minimum)
    entry = cache.get(key)
    if entry is None:
        entry = cache[key] = (style, context, _split_first_line(
            text, style, context, max_width, justification_spacing, is_line_start, minimum))
    layout, *metrics = entry[2]
    clone = object.__new__(type(layout))  # copy.copy, in two calls instead of six
    clone.__dict__.update(layout.__dict__)
    return (clone, *metrics)


def installed() -> bool:
    """Does layout go through the memo (the WeasyPrint release and signature it was read on)?"""
    return inline.split_first_line is _remembered_split


def _install() -> None:
    parameters = tuple(inspect.signature(_split_first_line).parameters)
    if weasyprint.__version__.startswith(_READ_ON) and parameters == _PARAMETERS:
        # layout.preferred also imports it from layout.inline inside a function: that finds this one.
        inline.split_first_line = preferred.split_first_line = _remembered_split


@contextmanager
def remembering() -> Iterator[None]:
    """Remember line breaks within this block (one document's layout), in this thread."""
    previous = getattr(_state, "cache", None)
    _state.cache = {} if ENABLED else None
    try:
        yield
    finally:
        _state.cache = previous


_install()
