"""Letters as PDF: a letter's HTML becomes one A4 PDF, laid out by WeasyPrint.

WeasyPrint fetches through ``SafeFetcher``: ``data:`` URIs and files under ``renderers/assets/``
only; any other URL (files elsewhere, http, ftp...) is refused and the resource is simply left
out. PDF attachments (``<link rel=attachment>``, ``<a rel=attachment>``) are dropped before writing.

``render_pdfs`` is the fast path. Each thread reuses one FontConfiguration (a new one per letter
is most of WeasyPrint's fixed cost), and letters that can share a document are laid out up to
``BATCH_SIZE`` at a time as one: the first letter's ``<head>`` (all letters' heads must be equal
but for ``<title>``), then each letter's ``<body>`` content in a wrapper element that starts a new
page; the document is split by pages into one PDF per letter, titled as the letter. That saves the
per-document CSS work, which grows with the template's stylesheet. Shared styles are accepted, not
scoped: letters share only when their CSS cannot tell the difference (``_css_mergeable``) and the
layout shows it did not (``_pages_by_letter``); any other letter is rendered alone, as by
``render_pdf``. Tests hold every page of a batched letter byte-equal to the letter alone.
Within a document, a text's line breaks are asked of Pango once per text, style and width
(``pdf_linecache``): a batch repeats most of its letters' text; and a written document's layout
context is emptied so its styles are freed by reference counting (``pdf_release``). Both are
WeasyPrint hooks that importing this module does not install: the entry point does, through
``renderers.pdf_hooks.install(enabled)``; without them letters are the same, only slower.

Importing this module does not import WeasyPrint (about a second): the engine modules are imported
by the first letter rendered, so a command that only might render (the CLI, the API) starts fast.
"""


from __future__ import annotations

from typing import TYPE_CHECKING, Any

from renderers.errors import RenderError

if TYPE_CHECKING:
    from renderers.pdf_engine import ASSETS, SafeFetcher

__all__ = ["ASSETS", "SafeFetcher", "render_batch", "render_each", "render_pdf", "render_pdfs"]


def __getattr__(name: str) -> Any:
    """``ASSETS`` and ``SafeFetcher`` are ``pdf_engine``'s, imported (with WeasyPrint) when asked for."""
    if name in ("ASSETS", "SafeFetcher"):
        from renderers import pdf_engine

        return getattr(pdf_engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def render_pdf(html: str) -> bytes:
    """One A4 PDF from a letter's HTML, styled by ``assets/letter.css`` under the letter's own CSS.

    Raises RenderError when WeasyPrint cannot lay it out (unreachable images are only left out).
    """
    from weasyprint import HTML

    from renderers.pdf_engine import _fetcher, _layout, _write
    from renderers.pdf_release import released_after

    with released_after():
        return _write(_layout(HTML(string=html, url_fetcher=_fetcher()), html))


def render_each(htmls: list[str]) -> list[bytes | RenderError]:
    """One PDF per letter, in order, the same as ``render_pdf`` gives, faster for many letters;
    a letter that cannot be rendered has its RenderError in its place, and the others their PDFs.

    A batch that fails as one document is laid out again letter by letter, to find which failed.
    """
    from renderers.pdf_batch import _parse, _plan, _render_merged

    letters = [_parse(html) for html in htmls]
    results: dict[int, bytes | RenderError] = {}
    for batch in _plan(letters):
        merged = _render_merged([letters[i] for i in batch]) if len(batch) > 1 else None
        if merged is not None:
            results.update(zip(batch, merged))
            continue
        for i in batch:
            try:
                results[i] = render_pdf(htmls[i])
            except RenderError as exc:
                results[i] = exc
    return [results[i] for i in range(len(htmls))]


def render_pdfs(htmls: list[str]) -> list[bytes]:
    """``render_each``, raising the first failure: a RenderError naming the letter's index,
    ``"letter 3: ..."``."""
    results = render_each(htmls)
    for i, result in enumerate(results):
        if isinstance(result, RenderError):
            raise RenderError(f"letter {i}: {str(result).removeprefix('letter: ')}") from result
    return results  # type: ignore[return-value]  # no RenderError left


def render_batch(htmls: list[str]) -> list[bytes] | None:
    """Lay the letters out as one document and split it into one PDF per letter; None when
    they cannot share a document (different heads, or CSS that would tell the difference)."""
    from renderers.pdf_batch import _parse, _plan, _render_merged

    letters = [_parse(html) for html in htmls]
    if not letters or [list(range(len(letters)))] != _plan(letters, batch_size=len(letters)):
        return None
    return _render_merged(letters)
