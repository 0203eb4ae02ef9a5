"""Letters as PDF: text, page size, what WeasyPrint may fetch, batches equal to one by one."""

from __future__ import annotations

import base64
import gc
import io
import socket
from pathlib import Path

import pytest
from pypdf import PdfReader

from weasyprint.layout import inline, preferred
from weasyprint.text import line_break

from renderers import pdf_batch, pdf_engine, pdf_hooks, pdf_linecache, pdf_release
from renderers.errors import RenderError
from renderers.pdf import ASSETS, SafeFetcher, render_batch, render_each, render_pdf, render_pdfs
from renderers.templating import compile_campaign

NAME = "Ørjan Brontë-Séverine"
# A 1x1 PNG and a 40x40 SVG square, both inline.
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQ"
       "DwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
SVG = ("data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHdpZHRo"
       "PSI0MCIgaGVpZ2h0PSI0MCI+PHJlY3Qgd2lkdGg9IjQwIiBoZWlnaHQ9IjQwIi8+PC9zdmc+")


def reader(pdf: bytes) -> PdfReader:
    return PdfReader(io.BytesIO(pdf))


def text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in reader(pdf).pages)


def streams(pdf: bytes) -> list[bytes]:
    """What each page draws: text, glyph positions, images, rules."""
    return [page.get_contents().get_data() for page in reader(pdf).pages]


def letter(i: int, style: str = "", extra: str = "", title: str = "Letter") -> str:
    """A letter as a letter template renders one: a full document with its own head and styles."""
    paragraphs = "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>" * (i % 3 * 25)
    return f"""<!doctype html><html lang="da"><head><meta charset="utf-8">
<title>{title} {i}</title><style>.address {{ margin-bottom: 20mm }} {style}</style></head>
<body><div class="address">{NAME} {i}<br>Hovedgaden {i}<br>2100 København Ø</div>
<img src="{SVG}" style="float: right"><h1>Dear {NAME} {i},</h1>{paragraphs}
<ul><li>one<ul><li>nested</li></ul></li></ul><table><tr><td>Total</td><td>{i} kr</td></tr></table>
<svg width="20" height="20"><rect width="10" height="10"/></svg>{extra}
<p>Kind regards,<br>ACME</p></body></html>"""


# --- one letter ----------------------------------------------------------------------------------

def test_the_recipients_name_with_accents_is_in_the_pdf_text():
    wrapper = "<html><head><style>p { margin: 0 }</style></head><body>{{ content }}</body></html>"
    html = compile_campaign(None, "<p>Dear {{ contact.first_name }},</p>", wrapper).render(
        {"contact": {"first_name": NAME}}, footer=False).html
    pdf = render_pdf(html)
    assert pdf.startswith(b"%PDF-")
    assert f"Dear {NAME}," in text(pdf)


def test_a_letter_is_a4_unless_its_own_css_says_otherwise():
    a4 = reader(render_pdf("<p>x</p>")).pages[0].mediabox
    assert (round(float(a4.width)), round(float(a4.height))) == (595, 842)
    a5 = reader(render_pdf("<style>@page { size: A5 }</style><p>x</p>")).pages[0].mediabox
    assert (round(float(a5.width)), round(float(a5.height))) == (420, 595)


def test_an_empty_letter_is_one_blank_page():
    assert len(reader(render_pdf("")).pages) == 1
    assert [len(reader(pdf).pages) for pdf in render_pdfs(["", " ", "<p>x</p>"])] == [1, 1, 1]


# --- what WeasyPrint may fetch -------------------------------------------------------------------

@pytest.fixture
def listener():
    """A TCP port on 127.0.0.1; the test asserts nothing connected to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    yield server
    server.close()


def assert_no_connection(server: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        server.accept()


@pytest.fixture
def png_file(tmp_path) -> Path:
    """A real image outside the assets: a letter must not be able to show it."""
    path = tmp_path / "outside.png"
    path.write_bytes(base64.b64decode(PNG.partition(",")[2]))
    return path


def hostile(port: int, image: Path) -> str:
    url = f"http://127.0.0.1:{port}"
    return f"""<html><head><style>@import url({url}/import.css);</style>
<link rel="stylesheet" href="{url}/style.css">
<link rel="attachment" href="file:///etc/passwd">
<link rel="attachment" href="data:text/plain,inline-secret"></head>
<body><p>{NAME}</p><img src="file:///etc/passwd"><img src="{url}/x.png">
<div style="background: url({url}/bg.png)">background</div>
<img src="file://{ASSETS}/../../pyproject.toml"><img src="{image.as_uri()}">
<svg width="10" height="10"><image href="{image.as_uri()}" width="10" height="10"/></svg>
<a rel="attachment" href="file:///etc/passwd">passwd</a>
<a rel="attachment" href="data:text/plain,inline-secret">secret</a>
<img src="{PNG}" width="10" height="10"></body></html>"""


def assert_nothing_embedded(pdf: bytes) -> None:
    document = reader(pdf)
    assert b"root:" not in pdf
    assert document.attachments == {}
    assert "/EmbeddedFiles" not in str(document.trailer["/Root"].get("/Names", {}))
    for page in document.pages:
        for annotation in page.get("/Annots") or []:
            assert annotation.get_object()["/Subtype"] != "/FileAttachment"


def test_a_letter_fetches_nothing_and_embeds_nothing(listener, png_file):
    pdf = render_pdf(hostile(listener.getsockname()[1], png_file))
    assert_no_connection(listener)
    assert_nothing_embedded(pdf)
    assert NAME in text(pdf)
    assert [len(page.images) for page in reader(pdf).pages] == [1]  # the data: PNG only


def test_batched_letters_fetch_nothing_and_embed_nothing(listener, png_file):
    html = hostile(listener.getsockname()[1], png_file)
    pdfs = render_pdfs([html, html, html])
    assert_no_connection(listener)
    for pdf in pdfs:
        assert_nothing_embedded(pdf)
        assert [len(page.images) for page in reader(pdf).pages] == [1]


def test_the_fetcher_serves_data_uris_and_assets_only(tmp_path, monkeypatch):
    fetcher = SafeFetcher()
    assert fetcher.fetch("data:text/plain;base64,aGk=").read() == b"hi"
    css = fetcher.fetch((ASSETS / "letter.css").as_uri())
    assert css.content_type == "text/css" and b"@page" in css.read()
    for url in ("file:///etc/passwd", f"file://{ASSETS}/../../pyproject.toml",
                f"file://localhost{ASSETS}/%2e%2e/%2e%2e/pyproject.toml",
                f"file://example.com{ASSETS}/letter.css", "http://127.0.0.1:9/x.png",
                "https://example.com/x.png", "ftp://example.com/x", f"file://{ASSETS}"):
        with pytest.raises(ValueError):
            fetcher.fetch(url)
    (tmp_path / "logo.svg").write_text("<svg/>")
    (tmp_path / "escape.css").symlink_to("/etc/passwd")
    monkeypatch.setattr(pdf_engine, "ASSETS", tmp_path.resolve())
    assert fetcher.fetch((tmp_path / "logo.svg").as_uri()).read() == b"<svg/>"
    with pytest.raises(ValueError):
        fetcher.fetch((tmp_path / "escape.css").as_uri())


# --- many letters in one document ----------------------------------------------------------------

SHAREABLE = {
    "no own CSS": "",
    "a reset and variables": "*, *::before, *::after { box-sizing: border-box; margin: 0; "
                             "padding: 0 } :root { --ink: #333 } p { color: var(--ink) }",
    "body and html styles": "body { max-width: 150mm; margin: 0 auto; font: 12pt serif } "
                            "html { background: #eee }",
    "structural selectors": "p:first-child, .address:first-child { margin-top: 30mm } "
                            "body p + p { margin-top: 5mm } li > ul { color: blue }",
    "page rules and breaks": "@page { margin: 30mm 20mm; @bottom-center { content: 'ACME' } } "
                             "h1 { break-before: page }",
    "media and fonts": "@media print { .address { margin-bottom: 40mm } }",
}


@pytest.mark.parametrize("style", SHAREABLE.values(), ids=SHAREABLE.keys())
def test_batched_letters_are_the_letters_rendered_one_by_one(style):
    htmls = [letter(i, style) for i in range(5)]
    batch = render_batch(htmls)
    assert batch is not None, "these letters should share one document"
    for html, pdf in zip(htmls, batch):
        alone = render_pdf(html)
        assert streams(pdf) == streams(alone)
        assert reader(pdf).metadata.title == reader(alone).metadata.title
    assert max(len(reader(pdf).pages) for pdf in batch) > 1  # letters running over pages too


UNSHAREABLE = {
    "child of body": "body > p { color: red }",
    "first page": "@page :first { margin-top: 50mm }",
    "page numbers": "@page { @bottom-right { content: counter(page) } }",
    "fixed element": ".address { position: fixed; top: 0 }",
    "body padding": "body { padding: 10mm }",
    "html margin": "html { margin-top: 1cm }",
    "generated body content": "body::before { content: 'DRAFT' }",
    "wrapper-matching selector": ":nth-child(2) p { color: red }",
    "counter on body": "body { counter-reset: item }",
    "relational selector": "div:has(p) { color: red }",
    "flex body": "body { display: flex; flex-direction: column }",
}


@pytest.mark.parametrize("style", UNSHAREABLE.values(), ids=UNSHAREABLE.keys())
def test_letters_whose_css_would_notice_are_rendered_one_by_one(style):
    htmls = [letter(i, style) for i in range(3)]
    assert render_batch(htmls) is None
    for html, pdf in zip(htmls, render_pdfs(htmls)):
        assert streams(pdf) == streams(render_pdf(html))


def test_letters_with_styles_in_the_body_or_different_heads_do_not_share():
    styled = [letter(i, extra="<style>p { color: red }</style>") for i in range(3)]
    assert render_batch(styled) is None
    assert render_batch([letter(0, "p { color: red }"), letter(1)]) is None
    assert render_batch([letter(i, extra='<a href="#top">top</a>') for i in range(2)]) is None


def test_render_pdfs_keeps_the_order_of_mixed_letters():
    htmls = []
    for i in range(7):
        style = ("body > p { color: red }", "", ".address { color: blue }")[i % 3]
        htmls.append(letter(i, style, extra="<style>p{}</style>" if i == 4 else ""))
    pdfs = render_pdfs(htmls)
    assert len(pdfs) == 7
    for i, pdf in enumerate(pdfs):
        assert f"{NAME} {i}\n" in text(pdf)
        assert reader(pdf).metadata.title == f"Letter {i}"


def test_a_letter_that_cannot_be_laid_out_fails_alone():
    htmls = [letter(i) for i in range(4)]
    htmls[2] = letter(2, extra='<p style="letter-spacing: 1e300px">xy</p>')  # WeasyPrint gives up
    results = render_each(htmls)
    assert isinstance(results[2], RenderError) and "could not be laid out" in str(results[2])
    for i in (0, 1, 3):
        assert streams(results[i]) == streams(render_pdf(htmls[i]))
    with pytest.raises(RenderError, match=r"^letter 2: the PDF could not be laid out"):
        render_pdfs(htmls)


def test_render_pdfs_batches_more_letters_than_one_document_holds(monkeypatch):
    monkeypatch.setattr(pdf_batch, "BATCH_SIZE", 4)
    htmls = [letter(i) for i in range(9)]  # batches of 4, 4 and a last letter alone
    pdfs = render_pdfs(htmls)
    for i, pdf in enumerate(pdfs):
        assert f"{NAME} {i}\n" in text(pdf)
    assert streams(pdfs[5]) == streams(render_pdf(htmls[5]))


# --- line breaks remembered within a document ----------------------------------------------------

LINE_BREAKING = {
    "plain": "",
    "justified and hyphenated": "p { text-align: justify; hyphens: auto }",
    "letter and word spacing": "p, h1 { letter-spacing: 0.4pt; word-spacing: 3pt }",
    "preserved white space": "p { white-space: pre-wrap } li { white-space: nowrap }",
    "words broken anywhere": ".address { width: 14mm; overflow-wrap: anywhere }",
    "ellipsis": "h1, .other { width: 35mm; overflow: hidden; white-space: nowrap; "
                "text-overflow: ellipsis }",
    "table column widths": "table { width: 100% } td { padding: 2mm; text-align: right }",
}
# Soft hyphens and a tab; the same words in two styles, which must not share their line breaks.
EXTRA = ("<p>Inter&shy;nationali&shy;sation of an extra&shy;ordinarily&shy;long&shy;word, tab\there</p>"
         "<p>The same words in another style</p><p class=other>The same words in another style</p>")


@pytest.mark.parametrize("style", LINE_BREAKING.values(), ids=LINE_BREAKING.keys())
def test_remembered_line_breaks_draw_the_letters_as_laid_out_afresh(style):
    htmls = [letter(i, style + " .other { font: bold 16pt serif }", extra=EXTRA) for i in range(4)]
    assert pdf_hooks.install() == {"linecache": True, "release": True}
    remembered = [render_pdfs(htmls), [render_pdf(htmls[1])]]
    assert pdf_hooks.install(False) == {"linecache": False, "release": False}
    afresh = [render_pdfs(htmls), [render_pdf(htmls[1])]]
    for got, expected in zip(sum(remembered, []), sum(afresh, [])):
        assert streams(got) == streams(expected)


def test_a_batch_lays_out_each_repeated_line_once(monkeypatch):
    assert pdf_linecache.installed(), "WeasyPrint changed: read renderers/pdf_linecache.py again"
    asked: list[str] = []
    pango = pdf_linecache._split_first_line
    monkeypatch.setattr(pdf_linecache, "_split_first_line", lambda *a: asked.append(a[0]) or pango(*a))
    htmls = [letter(1) for _ in range(3)]
    assert render_batch(htmls) is not None
    remembered = len(asked)
    asked.clear()
    pdf_hooks.uninstall()  # WeasyPrint as shipped, its calls counted
    counted = lambda *a, **k: asked.append(a[0]) or line_break.split_first_line(*a, **k)  # noqa: E731
    monkeypatch.setattr(inline, "split_first_line", counted)
    monkeypatch.setattr(preferred, "split_first_line", counted)
    assert render_batch(htmls) is not None
    assert 0 < remembered * 2 < len(asked)  # three equal letters: their lines asked of Pango about once


# --- memory --------------------------------------------------------------------------------------

def test_written_letters_leave_their_styles_to_reference_counting():
    assert pdf_release.installed(), "WeasyPrint changed: read renderers/pdf_release.py again"
    htmls = [letter(i) for i in range(6)]
    render_pdfs(htmls)  # fonts and caches warmed up
    gc.collect()
    gc.disable()
    try:
        render_pdfs(htmls)
        cyclic = gc.collect()
    finally:
        gc.enable()
    assert cyclic < 1000 * len(htmls)  # ~3,400 a letter when the layout context keeps its cycle
