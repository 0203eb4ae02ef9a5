"""The plain-text alternative of an HTML body: odd markup, line breaks, and input that must not
take long (see also test_templating.py for the common cases)."""

from __future__ import annotations

import pytest

from renderers.plain_text import html_to_text


@pytest.mark.parametrize(
    ("html", "text"),
    [
        # tag names in any case, the second time too (names are remembered once lowercased)
        ("<P>One</P><DIV>two<BR>three</DIV><UL><LI>four</LI></UL>", "One\n\ntwo\nthree\n\n- four\n"),
        ("<P>One</P><DIV>two<BR>three</DIV><UL><LI>four</LI></UL>", "One\n\ntwo\nthree\n\n- four\n"),
        ("<Table><TR><Th>A</tH><TH>B</TH></TR><tr><TD>1</td><td>2</td></tr></Table>", "A B\n1 2\n"),
        # one <br> or a line block is a line break; a paragraph or two <br> (whatever is between
        # them, blocks or blank space) a blank line; never more than one blank line
        ("a<br>b", "a\nb\n"),
        ("a<br/>b<br />c", "a\nb\nc\n"),
        ("a<div><br></div>b", "a\nb\n"),
        ("a<br><br>b", "a\n\nb\n"),
        ("a<br><div><br>b", "a\n\nb\n"),
        ("a<br> &nbsp; <br>b", "a\n\nb\n"),
        ("<p>a</p>&nbsp;<div>b</div>", "a\n\nb\n"),
        ("<h1>T</h1>\n\n\n<p></p><p>x</p>", "T\n\nx\n"),
        ("x<ul><li>a</li></ul>y", "x\n\n- a\n\ny\n"),
        # no line breaks before the first line or after the last
        ("<li>one<li>two", "- one\n- two\n"),
        ("<br><p>x</p><br><br>", "x\n"),
        ("<div><br>", ""),
        # table cells are apart
        ("a<td>b</td>c", "a b c\n"),
        # the characters the converter uses as markers are dropped from the input
        ("a\x00b\x01c\x02d", "abcd\n"),
        ("<p>a\x01</p>\x02\x02b", "a\n\nb\n"),
        # quoted attribute values may hold ">"; a quote never closed leaves the "tag" as text
        ('<p title="a>b">x</p><img alt=\'y\' title="1>0">', "x\n\ny\n"),
        ('<p a="b>text', '<p a="b>text\n'),
        ("3 < 4 > 2 and a<3", "3 < 4 > 2 and a<3\n"),
        ("a&nbsp;&nbsp;b&#10;c", "a b c\n"),
        # comments, declarations and invisible elements go, an unclosed one to the end
        ('<!doctype html><?xml version="1.0"?>x', "x\n"),
        ("a<!-- hidden <p> -->b", "ab\n"),
        ("a<!-- never closed <p>b", "a\n"),
        ('a<SCRIPT type="x">if (a<b) {}</script >b', "ab\n"),
        ("a<style>p{}", "a\n"),
        # links without a useful URL keep their text; a link without text shows its URL
        ('<a href="#">top</a> <a href="javascript:x()">js</a> <a href="">e</a> <a>n</a>', "top js e n\n"),
        ('<a href="https://x.example/"></a>', "https://x.example/\n"),
        ('<a href="https://x.example/?a=1&amp;b=2">https://x.example/?a=1&amp;b=2</a>',
         "https://x.example/?a=1&b=2\n"),
    ],
)
def test_text_alternative_of_odd_markup(html, text):
    assert html_to_text(html) == text


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<a " * 50_000, "<a" + " <a" * 49_999 + "\n"),
        ('<p title="' * 50_000, '<p title="' * 49_999 + '<p title="\n'),
        ("<img alt=" * 50_000, "<img alt=" * 49_999 + "<img alt=\n"),
        ("x" + "<!--" * 50_000, "x\n"),
        ("x" + "<script>" * 50_000, "x\n"),
        ("<div>" * 50_000 + "x" + "<div> " * 50_000, "x\n"),
        ("x" + "<br><div>" * 50_000 + "y", "x\n\ny\n"),
    ],
    ids=["a", "quote", "img", "comment", "script", "div", "br"],
)
def test_pathological_markup_takes_linear_time(html, text):
    # Each would take minutes if a pattern went back over the rest of the input for every tag.
    assert html_to_text(html) == text
