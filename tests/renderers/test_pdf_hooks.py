"""The WeasyPrint speed hooks: off until installed, on only where their WeasyPrint checks pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import weasyprint
from weasyprint.document import Document
from weasyprint.layout import inline, preferred
from weasyprint.text import line_break

from renderers import pdf_hooks, pdf_linecache, pdf_release
from renderers.pdf import render_pdf, render_pdfs

ROOT = Path(__file__).resolve().parents[2]
OFF = {"linecache": False, "release": False}
ON = {"linecache": True, "release": True}
WEASYPRINTS_OWN = line_break.split_first_line, Document.__dict__["_build_layout_context"]


def assert_weasyprint_as_shipped() -> None:
    assert inline.split_first_line is preferred.split_first_line is line_break.split_first_line
    assert (line_break.split_first_line, Document.__dict__["_build_layout_context"]) == WEASYPRINTS_OWN
    assert not pdf_linecache.installed() and not pdf_release.installed()


def test_importing_the_renderer_patches_nothing():
    check = """
import renderers.pdf
import weasyprint.layout.inline, weasyprint.layout.preferred, weasyprint.text.line_break
from weasyprint.document import Document
own = weasyprint.text.line_break.split_first_line
assert weasyprint.layout.inline.split_first_line is own, "inline"
assert weasyprint.layout.preferred.split_first_line is own, "preferred"
build = Document.__dict__["_build_layout_context"]
assert isinstance(build, classmethod), build
assert build.__func__.__module__ == "weasyprint.document", build.__func__
assert build.__func__.__qualname__ == "Document._build_layout_context", build.__func__
"""
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_install_turns_both_on_and_uninstall_gives_weasyprint_its_own_back():
    pdf_hooks.uninstall()
    assert_weasyprint_as_shipped()
    assert pdf_hooks.install() == ON
    assert pdf_hooks.install() == ON  # twice is fine: still WeasyPrint's originals behind them
    assert inline.split_first_line is preferred.split_first_line is pdf_linecache._remembered_split
    assert pdf_linecache._split_first_line is line_break.split_first_line
    assert pdf_release._original is WEASYPRINTS_OWN[1]
    assert Document.__dict__["_build_layout_context"].__func__ is pdf_release._catching_build
    pdf_hooks.uninstall()
    pdf_hooks.uninstall()
    assert_weasyprint_as_shipped()


def test_install_false_leaves_both_off_and_letters_still_render():
    assert pdf_hooks.install(False) == OFF
    assert pdf_hooks.install(False) == OFF
    assert_weasyprint_as_shipped()
    assert render_pdf("<p>Hello</p>").startswith(b"%PDF-")
    assert all(pdf.startswith(b"%PDF-") for pdf in render_pdfs(["<p>a</p>", "<p>b</p>"]))


def test_another_weasyprint_release_installs_nothing_and_raises_nothing(monkeypatch):
    monkeypatch.setattr(weasyprint, "__version__", "71.0")
    assert pdf_hooks.install() == OFF  # they were on: an install that fails its checks turns off
    pdf_hooks.uninstall()
    assert pdf_hooks.install() == OFF
    assert pdf_linecache.install() is False and pdf_release.install() is False
    assert_weasyprint_as_shipped()
    assert render_pdf("<p>Hello</p>").startswith(b"%PDF-")


def test_a_weasyprint_without_the_classmethod_or_with_other_parameters_installs_nothing(monkeypatch):
    pdf_hooks.uninstall()
    monkeypatch.delattr(Document, "_build_layout_context")
    assert pdf_release.install() is False  # no KeyError
    monkeypatch.setattr(Document, "_build_layout_context", classmethod(lambda cls, html, options: None),
                        raising=False)
    assert pdf_release.install() is False
    monkeypatch.setattr(Document, "_build_layout_context", staticmethod(WEASYPRINTS_OWN[1].__func__))
    assert pdf_release.install() is False

    def split_first_line(text, style, context, max_width, is_line_start=True, minimum=False):
        raise AssertionError("not called")

    for module in (line_break, inline, preferred):
        monkeypatch.setattr(module, "split_first_line", split_first_line)
    assert pdf_linecache.install() is False
    assert inline.split_first_line is split_first_line


def first_line_metrics(first_line, text, layout, resume_at, space_collapse, style,
                       hyphenated=False, hyphenation_character=None):
    return layout, first_line.length, resume_at, 0, 0, 0  # the holder left active


def test_a_weasyprint_returning_the_layout_still_active_is_not_remembered(monkeypatch):
    pdf_hooks.uninstall()
    monkeypatch.setattr(line_break, "first_line_metrics", first_line_metrics)
    assert pdf_linecache.install() is False
    assert_weasyprint_as_shipped()
    monkeypatch.undo()
    assert pdf_linecache.install() is True


def test_a_holder_returned_active_is_passed_on_uncached(monkeypatch):
    assert pdf_linecache.installed(), "WeasyPrint changed: read renderers/pdf_linecache.py again"
    asked = []

    def split(*args):
        asked.append(args[0])
        return (SimpleNamespace(layout="a Pango layout", text=args[0]), 1, None, 2, 3, 4)

    monkeypatch.setattr(pdf_linecache, "_split_first_line", split)
    style, context = object(), object()
    with pdf_linecache.remembering():
        first = inline.split_first_line("x", style, context, 10, 0)
        second = inline.split_first_line("x", style, context, 10, 0)
    assert asked == ["x", "x"] and first[0] is not second[0] and first[1:] == second[1:]
