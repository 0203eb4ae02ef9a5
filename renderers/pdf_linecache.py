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
the holder. The copy is shallow, which is only right because the holder comes back *deactivated*:
WeasyPrint's ``first_line_metrics`` calls ``layout.deactivate()`` before returning it, dropping its
Pango layout, language and style, so a copy shares no Pango object with the cached holder and
re-activating it builds its own. ``install()`` reads that in WeasyPrint's source, and a holder that
still has its Pango layout is passed on uncached. Keys hold the style and context objects
themselves, so their ids cannot be reused while the cache lives; the cache lives for one
``remembering()`` block, one document.

Nothing happens at import: the entry point installs it through ``renderers.pdf_hooks.install
(enabled)`` (the worker's ``WEASYPRINT_HOOKS`` setting, on by default). ``install()`` replaces the
name in the two WeasyPrint modules that call it for layout, and only on the WeasyPrint release it
was read on (``_READ_ON``), with the same parameters and the deactivated holder; anywhere else it
returns False and layouts run as WeasyPrint ships them. Tests hold letters laid out with and
without it equal.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import weasyprint
from weasyprint.layout import inline, preferred
from weasyprint.text import line_break

_READ_ON = "70."
_PARAMETERS = ("text", "style", "context", "max_width", "justification_spacing", "is_line_start",
               "minimum")
_split_first_line: Callable[..., tuple] | None = None  # WeasyPrint's, set by install()
_lock = threading.Lock()
_state = threading.local()


def _remembered_split(text: str, style: Any, context: Any, max_width: Any, justification_spacing: Any,
                      is_line_start: bool = True, minimum: bool = False) -> tuple:
    cache = getattr(_state, "cache", None)
    if cache is None:
        return _split_first_line(text, style, context, max_width, justification_spacing,
                                 is_line_start, minimum)
    key = (text, id(style), id(context), max_width, justification_spacing, is_line_start, minimum)
    entry = cache.get(key)
    if entry is None:
        result = _split_first_line(text, style, context, max_width, justification_spacing,
                                   is_line_start, minimum)
        if "layout" in result[0].__dict__:  # not deactivated: a copy would share its Pango layout
            return result
        entry = cache[key] = (style, context, result)
    layout, *metrics = entry[2]
    clone = object.__new__(type(layout))  # copy.copy, in two calls instead of six
    clone.__dict__.update(layout.__dict__)
    return (clone, *metrics)


def installed() -> bool:
    """Does layout go through the memo (the WeasyPrint release and signature it was read on)?"""
    return inline.split_first_line is _remembered_split


def install() -> bool:
    """Send WeasyPrint's layout through the memo, if this is the WeasyPrint it was read on (release,
    parameters, holder returned deactivated); return whether it is installed. Idempotent."""
    global _split_first_line
    with _lock:
        original = getattr(line_break, "split_first_line", None)
        callers = (getattr(inline, "split_first_line", None),
                   getattr(preferred, "split_first_line", None))
        if not (weasyprint.__version__.startswith(_READ_ON) and callable(original)
                and all(f is original or f is _remembered_split for f in callers)
                and _parameters(original) == _PARAMETERS and _returns_deactivated(original)):
            _uninstall()
            return False
        _split_first_line = original
        # layout.preferred also imports it from layout.inline inside a function: that finds this one.
        inline.split_first_line = preferred.split_first_line = _remembered_split
        return True


def uninstall() -> None:
    """Give WeasyPrint its own ``split_first_line`` back (nothing if the memo is not installed)."""
    with _lock:
        _uninstall()


def _uninstall() -> None:
    # _split_first_line stays: a layout already inside _remembered_split, in another thread, uses it.
    original = getattr(line_break, "split_first_line", None)
    for module in (inline, preferred):
        if getattr(module, "split_first_line", None) is _remembered_split:
            module.split_first_line = original


def _parameters(function: Callable) -> tuple[str, ...] | None:
    try:
        return tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return None


def _returns_deactivated(split_first_line: Callable) -> bool:
    """Does every ``return`` of ``split_first_line`` hand over ``first_line_metrics(...)``, which
    calls ``layout.deactivate()`` (deleting ``self.layout``) right before ``return layout, ...``?"""
    return _read_deactivated(split_first_line, getattr(line_break, "first_line_metrics", None),
                             getattr(getattr(line_break, "Layout", None), "deactivate", None))


@lru_cache(maxsize=4)
def _read_deactivated(split_first_line: Any, first_line_metrics: Any, deactivate: Any) -> bool:
    split, metrics, deactivate = map(_function_ast, (split_first_line, first_line_metrics,
                                                     deactivate))
    if split is None or metrics is None or deactivate is None:
        return False
    returns = [node.value for node in ast.walk(split) if isinstance(node, ast.Return)]
    calls_metrics = bool(returns) and all(
        isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
        and value.func.id == "first_line_metrics" for value in returns)
    *_, last_call, last_return = [None, None, *metrics.body]
    deactivates = (
        isinstance(last_call, ast.Expr) and isinstance(last_call.value, ast.Call)
        and ast.dump(last_call.value.func) == ast.dump(_expression("layout.deactivate"))
        and isinstance(last_return, ast.Return) and isinstance(last_return.value, ast.Tuple)
        and ast.dump(last_return.value.elts[0]) == ast.dump(_expression("layout"))
        and sum(isinstance(node, ast.Return) for node in ast.walk(metrics)) == 1)
    deletes_layout = any(
        isinstance(node, ast.Delete) and any(ast.dump(target) == ast.dump(
            _expression("self.layout", ast.Del())) for target in node.targets)
        for node in ast.walk(deactivate))
    return calls_metrics and deactivates and deletes_layout


def _function_ast(function: Any) -> ast.FunctionDef | None:
    try:
        node = ast.parse(textwrap.dedent(inspect.getsource(function))).body[0]
    except (OSError, TypeError, SyntaxError, IndexError):
        return None
    return node if isinstance(node, ast.FunctionDef) else None


def _expression(source: str, context: ast.expr_context | None = None) -> ast.expr:
    node = ast.parse(source, mode="eval").body
    if context is not None:
        node.ctx = context
    return node


@contextmanager
def remembering() -> Iterator[None]:
    """Remember line breaks within this block (one document's layout), in this thread: a no-op
    unless ``install()`` put the memo in WeasyPrint's way."""
    previous = getattr(_state, "cache", None)
    _state.cache = {}
    try:
        yield
    finally:
        _state.cache = previous
