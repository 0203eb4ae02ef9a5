"""The two WeasyPrint speed hooks, installed explicitly by the entry point, never at import.

- ``linecache`` (``pdf_linecache``): a text's line breaks asked of Pango once per document;
- ``release`` (``pdf_release``): a written document's layout context emptied, so its styles are
  freed by reference counting instead of the cycle collector.

Each replaces a WeasyPrint function, and only on the WeasyPrint release, signatures and behaviour
it was read on; on any other it stays off and WeasyPrint runs as shipped. Letters are the same
with or without them (tests hold them equal): they only save CPU. The worker calls
``install(enabled)`` at start-up with its ``WEASYPRINT_HOOKS`` setting (on by default).
"""

from __future__ import annotations

from renderers import pdf_linecache, pdf_release


def install(enabled: bool = True) -> dict[str, bool]:
    """Install both hooks when ``enabled`` (each only where its WeasyPrint checks pass), or
    uninstall them when False; return which are active: ``{"linecache": True, "release": True}``.

    Idempotent: calling it again, with either value, is fine. A hook that stays off (another
    WeasyPrint release) raises nothing; log the returned dict to see it.
    """
    if enabled:
        pdf_linecache.install()
        pdf_release.install()
    else:
        uninstall()
    return active()


def uninstall() -> None:
    """Give WeasyPrint its own functions back (both hooks off)."""
    pdf_linecache.uninstall()
    pdf_release.uninstall()


def active() -> dict[str, bool]:
    """Which hooks are installed now."""
    return {"linecache": pdf_linecache.installed(), "release": pdf_release.installed()}
