"""A laid-out document's styles freed by reference counting, not left to the cycle collector.

WeasyPrint lays a document out with a ``LayoutContext`` that refers to itself (a
``functools.partial`` bound to it) and, through its ``StyleFor``, to every computed style of the
document: about 1,900 objects a benchmark letter that only the cycle collector can free. Workers
collect after each batch (``worker.pipeline.roles.tune_gc``), and that took ~1 ms a letter, ~5% of
rendering. Emptying the context once the document's PDFs are written breaks the cycle: the styles
go with the document, the collection finds ~90 objects a letter (0.07 ms), and the invoice letter
takes 18.4 instead of 19.1 ms of CPU (batches alternating with and without it in one process).

The context is caught as WeasyPrint builds it (``Document._build_layout_context``), only on the
release this was read on (``_READ_ON``); anywhere else nothing is caught and the collector frees
it as before. It is emptied when the ``released_after()`` block ends, not before: drawing still
uses it (an SVG image draws through it), so the PDFs must be written inside the block.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import weasyprint
from weasyprint.document import Document

_READ_ON = "70."
_build_layout_context = Document.__dict__["_build_layout_context"].__func__
_state = threading.local()


def _catching_build(cls: type, *args: Any, **kwargs: Any) -> Any:
    context = _build_layout_context(cls, *args, **kwargs)
    caught = getattr(_state, "contexts", None)
    if caught is not None:
        caught.append(context)
    return context


def installed() -> bool:
    """Are layout contexts caught (the WeasyPrint release this was read on)?"""
    return Document.__dict__["_build_layout_context"].__func__ is _catching_build


@contextmanager
def released_after() -> Iterator[None]:
    """Empty the layout contexts of the documents laid out in this block, in this thread, when it
    ends: write their PDFs inside it."""
    previous = getattr(_state, "contexts", None)
    _state.contexts = caught = []
    try:
        yield
    finally:
        _state.contexts = previous
        for context in caught:
            context.__dict__.clear()


if weasyprint.__version__.startswith(_READ_ON):
    Document._build_layout_context = classmethod(_catching_build)
