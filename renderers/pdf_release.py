"""A laid-out document's styles freed by reference counting, not left to the cycle collector.

WeasyPrint lays a document out with a ``LayoutContext`` that refers to itself (a
``functools.partial`` bound to it) and, through its ``StyleFor``, to every computed style of the
document: about 1,900 objects a benchmark letter that only the cycle collector can free. Workers
collect after each batch (``worker.pipeline.roles.tune_gc``), and that took ~1 ms a letter, ~5% of
rendering. Emptying the context once the document's PDFs are written breaks the cycle: the styles
go with the document, the collection finds ~90 objects a letter (0.07 ms), and the invoice letter
takes 18.4 instead of 19.1 ms of CPU (batches alternating with and without it in one process).

The context is caught as WeasyPrint builds it (the classmethod ``Document._build_layout_context``).
Nothing happens at import: the entry point installs the catch through ``renderers.pdf_hooks.install
(enabled)`` (the worker's ``WEASYPRINT_HOOKS`` setting, on by default), and ``install()`` catches
only on the release this was read on (``_READ_ON``), where that classmethod exists with the same
parameters; anywhere else it returns False, nothing is caught and the collector frees the context as
before. It is emptied when the ``released_after()`` block ends, not before: drawing still uses it
(an SVG image draws through it), so the PDFs must be written inside the block.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import weasyprint
from weasyprint.document import Document

_READ_ON = "70."
_PARAMETERS = ("cls", "html", "font_config", "counter_style", "color_profiles", "options")
_original: classmethod | None = None  # WeasyPrint's, as found in Document.__dict__ by install()
_build_layout_context: Callable[..., Any] | None = None  # its function
_lock = threading.Lock()
_state = threading.local()


def _catching_build(cls: type, *args: Any, **kwargs: Any) -> Any:
    context = _build_layout_context(cls, *args, **kwargs)
    caught = getattr(_state, "contexts", None)
    if caught is not None:
        caught.append(context)
    return context


def _current() -> Any:
    return Document.__dict__.get("_build_layout_context")


def installed() -> bool:
    """Are layout contexts caught (the WeasyPrint release this was read on)?"""
    return getattr(_current(), "__func__", None) is _catching_build


def install() -> bool:
    """Catch layout contexts as WeasyPrint builds them, if this is the WeasyPrint it was read on
    (release, a ``_build_layout_context`` classmethod with the same parameters); return whether it
    is installed. Idempotent."""
    global _original, _build_layout_context
    with _lock:
        original = _original if installed() else _current()
        if not (weasyprint.__version__.startswith(_READ_ON) and isinstance(original, classmethod)
                and _parameters(original.__func__) == _PARAMETERS):
            _uninstall()
            return False
        if not installed():
            _original, _build_layout_context = original, original.__func__
            Document._build_layout_context = classmethod(_catching_build)
        return True


def uninstall() -> None:
    """Give ``Document`` WeasyPrint's own ``_build_layout_context`` back (nothing if not installed)."""
    with _lock:
        _uninstall()


def _uninstall() -> None:
    # _build_layout_context stays: a layout already inside _catching_build, in another thread, uses it.
    if installed():
        Document._build_layout_context = _original


def _parameters(function: Callable) -> tuple[str, ...] | None:
    try:
        return tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return None


@contextmanager
def released_after() -> Iterator[None]:
    """Empty the layout contexts of the documents laid out in this block, in this thread, when it
    ends: write their PDFs inside it. A no-op unless ``install()`` catches them."""
    previous = getattr(_state, "contexts", None)
    _state.contexts = caught = []
    try:
        yield
    finally:
        _state.contexts = previous
        for context in caught:
            context.__dict__.clear()
