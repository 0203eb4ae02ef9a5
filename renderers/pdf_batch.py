"""Many letters laid out as one WeasyPrint document, split back into one PDF per letter.

Letters share a document only when their heads are equal but for ``<title>`` and their CSS cannot
tell the difference (``_css_mergeable``); the layout then shows it did not (``_pages_by_letter``).
Any other letter is rendered alone by the caller.
"""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cssselect2
import tinycss2
import tinyhtml5
from cssselect2 import parser as sel
from weasyprint import CSS, HTML
from weasyprint.document import Document

from renderers.errors import RenderError
from renderers.pdf_engine import _fetcher, _layout, _write
from renderers.pdf_release import released_after

BATCH_SIZE = 50
"""Letters ``render_pdfs`` lays out as one document, at most."""
_WRAPPER = "campaign-dispatch-letter"  # a tag no template's type selector matches
# The wrapper must be an invisible block that starts a page: pinned against author rules by a user
# stylesheet's !important, which beats every author declaration, inline ones too. Not a style
# attribute: WeasyPrint shares one computed style among elements with the same parent style, the
# same matched rules and no style attribute, so with a rule all letters' wrappers share one, and
# their descendants share theirs in turn: 17% fewer Python calls per letter, half the style lookups.
_WRAPPER_STYLE = ";".join(f"{d}!important" for d in (
    "display:block", "break-before:page", "break-after:auto", "break-inside:auto", "margin:0",
    "padding:0", "border:0 none", "outline:0 none", "background:none", "width:auto",
    "height:auto", "min-width:0", "min-height:0", "max-width:none", "max-height:none",
    "position:static", "float:none", "clear:none", "transform:none", "overflow:visible",
    "columns:auto", "opacity:1", "content:normal", "page:auto"))


@lru_cache(maxsize=1)
def _wrapper_css() -> CSS:
    return CSS(string=f"{_WRAPPER} {{ {_WRAPPER_STYLE} }}", url_fetcher=_fetcher())



@dataclass
class _Letter:
    root: ET.Element
    key: str  # what letters sharing a document must have in common
    css: str
    inline: str  # the style attributes of <html> and <body>
    body_classes: frozenset[str]
    body_id: str | None
    title: str | None
    alone: bool  # it must be laid out on its own


def _local_name(tag: Any) -> str:
    return tag.rpartition("}")[2].lower() if isinstance(tag, str) else ""


def _child_text(element: ET.Element) -> str:
    return "".join([element.text or "", *(child.tail or "" for child in element)])


# Style attributes that make a letter depend on the pages around it.
_PAGE_BOUND = re.compile(r"fixed|running|footnote|counter|string|element|target-", re.IGNORECASE)


def _parse(html: str) -> _Letter:
    root = tinyhtml5.parse(html, namespace_html_elements=False)
    head, body = root.find("head"), root.find("body")
    if head is None or body is None:
        return _Letter(root, "", "", "", frozenset(), None, None, alone=True)
    styles, key, title, alone = [], [], None, False
    for element in head:
        name = _local_name(element.tag)
        if name == "title":
            title = _child_text(element) if title is None else title
            continue
        if name == "style":
            styles.append(_child_text(element))
        alone |= name == "link" and "stylesheet" in element.get("rel", "").lower()
        key.append(ET.tostring(element, encoding="unicode"))
    for element in body.iter():
        name = _local_name(element.tag)
        alone |= name in ("style", "link", "base", "meta", "title")
        alone |= name == "a" and element.get("href", "").strip().startswith("#")
        alone |= bool(_PAGE_BOUND.search(element.get("style", ""))) and element is not body
    key.append(repr((sorted(root.attrib.items()), sorted(body.attrib.items()))))
    inline = ";".join((root.get("style", ""), body.get("style", "")))
    classes = frozenset(body.get("class", "").split())
    return _Letter(root, "\n".join(key), "\n".join(styles), inline, classes, body.get("id"),
                   title, alone)


def _plan(letters: list[_Letter], batch_size: int | None = None) -> list[list[int]]:
    batch_size = batch_size or BATCH_SIZE
    plan: list[list[int]] = []
    groups: dict[str, list[int]] = {}
    for i, letter in enumerate(letters):
        if letter.alone:
            plan.append([i])
        else:
            groups.setdefault(letter.key, []).append(i)
    for indexes in groups.values():
        first = letters[indexes[0]]
        if len(indexes) > 1 and _css_mergeable(first.css, first.inline, first.body_classes,
                                               first.body_id):
            plan.extend(indexes[k:k + batch_size] for k in range(0, len(indexes), batch_size))
        else:
            plan.extend([i] for i in indexes)
    return plan


class _TreeHTML(HTML):
    """An ``HTML`` from an already parsed tree, as ``HTML.__init__`` builds one: merged letters
    are not serialised and parsed again (a round trip that would mangle inline SVG)."""

    def __init__(self, root: ET.Element) -> None:  # no super().__init__(): it parses a source
        base = next(root.iter("base"), None)
        self.base_url = (base.get("href") or "").strip() or None if base is not None else None
        self.url_fetcher = _fetcher()
        self.media_type = "print"
        self.wrapper_element = cssselect2.ElementWrapper.from_html_root(root, content_language=None)
        self.etree_element = self.wrapper_element.etree_element


def _render_merged(letters: list[_Letter]) -> list[bytes] | None:
    """Lay the letters out as one document, split it into one PDF per letter; None when the
    layout shows they did not render as they would alone (the caller then renders one by one)."""
    root = letters[0].root
    old_body = root.find("body")
    body = ET.Element("body", dict(old_body.attrib))
    wrappers: dict[int, int] = {}
    for i, letter in enumerate(letters):
        source = letter.root.find("body")
        wrapper = ET.SubElement(body, _WRAPPER)
        wrapper.text = source.text
        wrapper.extend(list(source))
        wrappers[id(wrapper)] = i
    root.remove(old_body)
    root.append(body)
    try:
        with released_after():
            document = _layout(_TreeHTML(root), letters[0].css, _wrapper_css())
            pages = _pages_by_letter(document, wrappers, len(letters))
            if pages is None:
                return None
            pdfs = []
            for letter, letter_pages in zip(letters, pages):
                part = document.copy(letter_pages)
                part.metadata = copy.copy(document.metadata)
                part.metadata.title = letter.title
                pdfs.append(_write(part))
    except (RenderError, AttributeError, KeyError, TypeError):
        # One by one instead: an error then names its letter. AttributeError & co mean
        # WeasyPrint's boxes changed shape (a new version): be safe, go slow.
        return None
    return pdfs


def _pages_by_letter(document: Document, wrappers: dict[int, int], count: int) -> list | None:
    # Each page must hold <html> > <body> > one wrapper, and nothing else, and <html>/<body>
    # must be plain blocks with no vertical margin, border or padding: otherwise what body and
    # html add once at the top of the document would be missing from all letters but the first.
    owners = []
    for page in document.pages:
        html_boxes = [box for box in page._page_box.children if box.element_tag == "html"]
        if len(html_boxes) != 1 or len(html_boxes[0].children) != 1:
            return None
        body = html_boxes[0].children[0]
        if body.element_tag != "body" or len(body.children) != 1:
            return None
        if not (_plain_block(html_boxes[0].style) and _plain_block(body.style)):
            return None
        owners.append(wrappers.get(id(body.children[0].element), -1))
    steps = zip([-1, *owners], [*owners, count])  # letters in order, each on one page or more
    if not all(after - before == 1 or (after == before >= 0) for before, after in steps):
        return None
    pages: list[list] = [[] for _ in range(count)]
    for page, owner in zip(document.pages, owners):
        pages[owner].append(page)
    return pages


def _plain_block(style: Any) -> bool:
    def zero(name: str) -> bool:
        value = style[name]
        return value == "auto" or getattr(value, "value", value) == 0

    return (style["display"] == ("block", "flow") and style["position"] == "static"
            and style["float"] == "none" and style["height"] == "auto"
            and getattr(style["max_height"], "value", None) == float("inf")
            and all(map(zero, ("margin_top", "margin_bottom", "padding_top", "padding_bottom",
                               "border_top_width", "border_bottom_width", "min_height")))
            and style["column_count"] == "auto" == style["column_width"]
            and style["break_inside"] == "auto" and not style["transform"]
            and not style["counter_reset"] and not style["counter_set"])


# --- which CSS may be shared by letters in one document ----------------------------------------
# Wrapping each letter's <body> content changes three things the CSS could see: the top-level
# elements' parent is the wrapper, not <body>; a selector may match the wrapper itself; and what
# counts pages or spans the document (page counters, @page :first, fixed and running elements,
# counters reset on body, footnotes) now spans all letters. CSS using any of these is not shared.
_SAFE_AT_RULES = frozenset({"font-face", "charset", "namespace", "counter-style"})
_NESTING_AT_RULES = frozenset({"media", "supports", "layer", "container"})
_PAGE_PROPS = frozenset({"counter-reset", "counter-set", "counter-increment", "string-set"})
_PAGE_FUNCTIONS = re.compile(
    r"(?<![\w-])(?:counters?|target-counters?|target-text|string|element|running)\(",
    re.IGNORECASE)


@lru_cache(maxsize=64)
def _css_mergeable(css: str, inline: str, classes: frozenset[str], body_id: str | None) -> bool:
    """Can letters with this CSS (``inline``: the <html> and <body> style attributes) share a
    document without the CSS seeing it? ``classes`` and ``body_id`` are <body>'s."""
    rules = tinycss2.parse_stylesheet(css, skip_comments=True, skip_whitespace=True)
    return _rules_ok(rules, (classes, body_id)) and _declarations_ok(_block(inline))


def _block(content: Any) -> list:
    return tinycss2.parse_blocks_contents(content or [], skip_comments=True, skip_whitespace=True)


def _rules_ok(rules: Iterable[Any], body: tuple) -> bool:
    for rule in rules:
        if rule.type == "qualified-rule":
            items = _block(rule.content)
            content = any(i.type == "declaration" and i.lower_name == "content" for i in items)
            if not (_declarations_ok(items) and _selectors_ok(rule.prelude, body, content)):
                return False
        elif rule.type == "at-rule":
            name = rule.lower_at_keyword
            if name in _NESTING_AT_RULES:
                nested = tinycss2.parse_rule_list(rule.content or [], True, True)
                if not _rules_ok(nested, body):
                    return False
            elif name == "page":  # :first, :left, :blank... count the merged document's pages
                if ":" in tinycss2.serialize(rule.prelude):
                    return False
                if not _declarations_ok(_block(rule.content)):
                    return False
            elif name not in _SAFE_AT_RULES:
                return False
    return True


def _declarations_ok(items: Iterable[Any]) -> bool:
    for item in items:
        if item.type == "at-rule":  # an @page margin box
            if not _declarations_ok(_block(item.content)):
                return False
        elif item.type == "qualified-rule":  # nested CSS: selectors not checked, so not shared
            return False
        elif item.type == "declaration":
            value = tinycss2.serialize(item.value).lower()
            if (item.lower_name in _PAGE_PROPS or _PAGE_FUNCTIONS.search(value)
                    or (item.lower_name == "position" and "fixed" in value)
                    or (item.lower_name == "float" and "footnote" in value)):
                return False
    return True


def _selectors_ok(prelude: list, body: tuple, declares_content: bool) -> bool:
    try:
        selectors = list(sel.parse(prelude))
    except sel.SelectorError:
        return True  # WeasyPrint drops the rule, merged or not
    return all(_selector_ok(selector, body, declares_content) for selector in selectors)


def _selector_ok(selector: Any, body: tuple, declares_content: bool) -> bool:
    chain, tree = [], selector.parsed_tree
    while isinstance(tree, sel.CombinedSelector):
        chain[:0] = [tree.combinator, tree.right]
        tree = tree.left
    chain.insert(0, tree)  # [compound, combinator, compound, ..., subject]
    compounds, combinators = chain[::2], [None, *chain[1::2], None]
    if not all(map(_nested_ok, compounds)):
        return False
    for i, compound in enumerate(compounds):
        typed, universal = _typed(compound), _universal(compound)
        if i == len(compounds) - 1:  # the subject: it may be the wrapper, whose style is pinned
            return typed or (universal and not (selector.pseudo_element and declares_content))
        if not (typed or universal) or (universal and combinators[i] in ("+", "~")):
            return False
        if combinators[i + 1] == ">" and not universal and _may_be_body(compound, body):
            return False
    return True


def _simple(compound: Any) -> list:
    return getattr(compound, "simple_selectors", [])


def _typed(compound: Any) -> bool:
    """Can only match elements with a tag name, class or id, or the root: never the wrapper."""
    return any(isinstance(s, (sel.LocalNameSelector, sel.ClassSelector, sel.IDSelector))
               or (isinstance(s, sel.PseudoClassSelector) and s.name == "root")
               for s in _simple(compound))


def _universal(compound: Any) -> bool:
    return all(isinstance(s, sel.NamespaceSelector) for s in _simple(compound))


def _may_be_body(compound: Any, body: tuple) -> bool:
    classes, body_id = body
    for s in _simple(compound):
        if ((isinstance(s, sel.LocalNameSelector) and s.lower_local_name != "body")
                or (isinstance(s, sel.ClassSelector) and s.class_name not in classes)
                or (isinstance(s, sel.IDSelector) and s.ident != body_id)
                or (isinstance(s, sel.PseudoClassSelector) and s.name == "root")):
            return False
    return True


def _nested_ok(compound: Any) -> bool:
    for s in _simple(compound):
        if isinstance(s, sel.RelationalSelector):
            return False
        for inner in getattr(s, "selector_list", None) or []:
            tree = getattr(inner, "parsed_tree", inner)
            if isinstance(tree, sel.CombinedSelector) or not _nested_ok(tree):
                return False
    return True
