"""WeasyPrint, locked down and warmed up: the fetcher, the base stylesheet, per-thread fonts, layout.

``SafeFetcher`` serves ``data:`` URIs and files under ``renderers/assets/`` only; any other URL
(files elsewhere, http, ftp...) is refused and the resource is simply left out. PDF attachments
(``<link rel=attachment>``, ``<a rel=attachment>``) are dropped before writing.
"""

from __future__ import annotations

import mimetypes
import re
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import DataHandler, Request, url2pathname

from weasyprint import CSS, HTML
from weasyprint.document import Document
from weasyprint.text.fonts import FontConfiguration
from weasyprint.urls import URLFetcher, URLFetcherResponse

from renderers.errors import RenderError
from renderers.pdf_linecache import remembering

ASSETS = (Path(__file__).resolve().parent / "assets").resolve()
_FONT_CONFIG_USES = 500


class SafeFetcher(URLFetcher):
    """WeasyPrint's URL fetcher limited to ``data:`` URIs and files under ``renderers/assets/``
    (real path, so no symlink or ``..`` escape). No network, no redirects; a refused URL raises
    inside WeasyPrint, which leaves that resource out of the PDF."""

    def __init__(self) -> None:
        super().__init__(allowed_protocols=("data", "file"), allow_redirects=False)

    def fetch(self, url: str, headers: Any = None) -> URLFetcherResponse:
        scheme = url.partition(":")[0].lower()
        if scheme == "data":
            with DataHandler().data_open(Request(url)) as response:  # decoded in memory
                return URLFetcherResponse(url, response.read(), dict(response.headers.items()))
        path = _asset(url) if scheme == "file" else None
        if path is None:
            raise ValueError(f"letters may use data: URIs and project assets only: {url:.100}")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return URLFetcherResponse(url, path.read_bytes(), {"Content-Type": kind})


def _asset(url: str) -> Path | None:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        return None
    try:
        path = Path(url2pathname(parts.path)).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None
    return path if path.is_file() and path.is_relative_to(ASSETS) else None


@lru_cache(maxsize=1)
def _fetcher() -> SafeFetcher:
    return SafeFetcher()


@lru_cache(maxsize=1)
def _base_css() -> CSS:
    return CSS(filename=str(ASSETS / "letter.css"), url_fetcher=_fetcher())


_local = threading.local()
_OWN_FONTS = re.compile(r"@(?:font|[^\s{;]*\\)", re.IGNORECASE)


def _font_config(css: str) -> FontConfiguration:
    # A FontConfiguration costs ~5 ms to create and caches fonts as it is used, so each thread
    # keeps one; CSS that may declare @font-face gets its own, so its fonts reach no other letter.
    if _OWN_FONTS.search(css):
        return FontConfiguration()
    uses = getattr(_local, "uses", _FONT_CONFIG_USES)
    if uses >= _FONT_CONFIG_USES:
        _local.config, uses = FontConfiguration(), 0
    _local.uses = uses + 1
    return _local.config


def _layout(source: HTML, css: str, user_css: CSS | None = None) -> Document:
    stylesheets = [_base_css()] if user_css is None else [_base_css(), user_css]
    try:
        with remembering():
            document = source.render(stylesheets=stylesheets, font_config=_font_config(css))
    except Exception as exc:  # WeasyPrint's errors have no common base class
        raise RenderError(f"letter: the PDF could not be laid out: {exc}") from exc
    document.metadata.attachments = []
    for page in document.pages:
        page.links = [link for link in page.links if link[0] != "attachment"]
    return document


def _write(document: Document) -> bytes:
    try:
        return document.write_pdf()
    except Exception as exc:
        raise RenderError(f"letter: the PDF could not be written: {exc}") from exc
