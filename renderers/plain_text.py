"""The plain-text alternative of an HTML body (``html_to_text``), and ``TextShapes``: the same text
for many recipients of one campaign at a fraction of the cost.

``html_to_text`` is a few regular-expression passes over the whole body. For one campaign most of
the body is the same for every recipient: the template's own text, with the recipient's values in
the same places. ``TextShapes`` converts the template's text once, with a placeholder in each
value's place, and then only puts each recipient's values into the converted text; see its docstring
for when that gives exactly what ``html_to_text`` gives, and what it falls back to when it does not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import unescape

# html_to_text works in a few regex passes (about 3x faster than html.parser). No pattern can
# scan past the next "<" on a failed attempt, so odd markup costs linear time, not quadratic.
# It runs once per recipient, so each pass is kept cheap: every pattern starts with a literal
# ("<" or " \x00") that the regex engine skips to instead of trying a match at each character,
# and the tag pass maps names through a dict instead of calling a Python function per tag.
_A = r"""[^<>"']*(?:(?:"[^"<]*"|'[^'<]*')[^<>"']*)*"""  # attributes; quoted values may hold ">"
_DROP = re.compile(
    # (?=[!shtn]): the first letters of the alternatives (case-insensitive, as they are), so that
    # most tags fail there at once rather than after trying six names
    rf"<(?=[!shtn])(?:!--.*?(?:-->|\Z)"
    rf"|(script|style|head|title|noscript|template)\b{_A}>.*?(?:</\1\s*>|\Z))",
    re.S | re.I,
)
_ALT = re.compile(rf"""<img\b{_A}?\salt\s*=\s*("[^"<]*"|'[^'<]*'|[^\s<>]+){_A}>""", re.I)
_LINK = re.compile(rf"<a\b({_A})>([^<]*(?:<(?!/?a\b)[^<]*)*)</a\s*>", re.I)
_HREF = re.compile(r"""\shref\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)""", re.I)
# Group 1: the tag's name with its "/" if it closes; None for <!...> and <?...>.
_TAG = re.compile(rf"<(/?[A-Za-z][^\s/<>]*){_A}>|<![^<>]*>|<\?[^<>]*>")
# Block tags leave markers: " \x00\x01" a paragraph, " \x00" a line, " \x00\x02" a <br>. Once
# whitespace is collapsed, a run of markers (with the spaces around them) becomes a blank line
# when it holds a paragraph or two <br>, else one line break. Every marker starts with " \x00",
# which the run patterns below can skip to; the space changes nothing, a run takes in its spaces.
_PARAGRAPH, _LINE, _BR = " \x00\x01", " \x00", " \x00\x02"
_BLOCKS = {
    **dict.fromkeys(("p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote",
                     "hr", "pre", "dl"), _PARAGRAPH),
    **dict.fromkeys(("div", "tr", "section", "article", "header", "footer", "main", "nav",
                     "aside", "address", "dt", "dd", "figure", "figcaption", "form", "center"),
                    _LINE),
    "br": _BR, "td": " ", "th": " ",
}
# What each tag leaves in the text, by the name _TAG captures: opening and closing block tags
# alike, "<li>" a line and a dash ("</li>" nothing), any other tag nothing.
_TAG_MARKS = {**_BLOCKS, **{f"/{name}": mark for name, mark in _BLOCKS.items()}, "li": " \x00- "}


class _Marks(dict[str | None, str]):
    """_TAG_MARKS by the name as written ("TD", "/Li", None): a name not seen before is
    lowercased, and remembered (a thousand short names at most, as templates choose them) so
    that the next recipient's tags are all plain dict lookups."""

    def __missing__(self, name: str) -> str:
        mark = _TAG_MARKS.get(name.lower(), "")
        if len(self) < 1000 and len(name) <= 20:
            self[name] = mark
        return mark


_MARKS = _Marks({**_TAG_MARKS, None: ""})  # None: <!...> and <?...>
# A run of markers that makes a blank line. It is tried at a run's start only (the lookbehind:
# not after another marker), so that a long run that does not qualify is scanned once, not once
# per marker.
_PARAGRAPH_RUN = re.compile(
    " \x00(?<![\x00-\x02] \x00)[\x00 ]*(?:\x01|\x02[\x00 ]*[\x01\x02])[\x00-\x02 ]*"
)
_LINE_RUN = re.compile(" \x00[\x00-\x02 ]*")  # any other run


def _unquote(value: str) -> str:
    return value[1:-1] if value[:1] in "\"'" else value


def _link(match: re.Match[str]) -> str:
    label = match.group(2)
    href = _HREF.search(match.group(1))
    if href is None:
        return label
    raw = _unquote(href.group(1)).strip()
    url = unescape(raw)
    low = url.lower()
    if not url or url == "#" or low.startswith("javascript:"):
        return label
    shown = " ".join(unescape(_TAG.sub("", label)).split())
    if shown == url or (low.startswith("mailto:") and shown == url[7:]):
        return label
    return f"{label} ({raw})" if shown else raw


def _alt(match: re.Match[str]) -> str:
    return f" {_unquote(match.group(1))} "


def html_to_text(html: str) -> str:
    """A plain-text alternative of an HTML body: tags stripped, entities unescaped, each link
    kept as ``text (url)``, whitespace collapsed, blocks on their own lines."""
    if "\x00" in html or "\x01" in html or "\x02" in html:  # the markers' characters; seldom there
        html = re.sub("[\x00-\x02]", "", html)
    text = _DROP.sub("", html)
    text = _LINK.sub(_link, _ALT.sub(_alt, text))
    parts = _TAG.split(text)  # text, tag name, text, tag name, ..., text
    parts[1::2] = map(_MARKS.__getitem__, parts[1::2])
    # A run of markers at the very start would only make newlines that strip() removes: drop it
    # (it has no space before it for the run patterns to find).
    text = " ".join(unescape("".join(parts)).split()).lstrip("\x00\x01\x02 ")
    # The lines need no stripping and no three newlines can meet: a run takes in the spaces on
    # both sides of it, and there is text between two runs.
    text = _LINE_RUN.sub("\n", _PARAGRAPH_RUN.sub("\n\n", text)).strip()
    return text + "\n" if text else ""


# --- TextShapes -----------------------------------------------------------------------------------
# A "shape" is the sequence of a rendering's output chunks with the template's own text kept and
# each value (a chunk the template's code computed) replaced by a placeholder: one private-use
# character per value, which no pattern above treats specially. html_to_text of the shape, with the
# placeholders in it, is worked out once; a recipient's text is then that text with the values put
# in. That is html_to_text's result exactly when each value would pass through the conversion as its
# placeholder does, which depends on where it stands:
#
# - TEXT, between tags: anything but markup ("<", ">", "&", quotes) and the converter's own marker
#   characters, without whitespace at either end (it would merge with the whitespace around it); it
#   comes out with its inner whitespace collapsed, as the conversion does;
# - TAG, inside a tag but not its name: no whitespace, markup or "=" either, so it cannot change
#   where the tag ends or which attributes it has; it comes out as it is where it shows (a link's
#   URL, an image's alt text), or not at all;
# - DROPPED, inside a comment or a script, style, head, title... element: only no "<" or ">".
#
# A shape with a placeholder where its value could change the outcome of a decision (a tag's name,
# a link's label, the start of a link's URL, right after "&") is converted recipient by recipient.
# Empty values are left out of the shape (a shape without them is another shape), and so is
# everything else that is not certain: then html_to_text runs on the whole body, as before.

_FIRST_TOKEN = 0xE000
_MAX_SLOTS = 0x1800  # U+E000..U+F7FF; a rendering with more values is converted whole
_TOKEN = re.compile("[\ue000-\uf8ff]")
_TEXT, _IN_TAG, _DROPPED = 0, 1, 2
_REFUSED = (
    re.compile("[<>&\"'`\x00-\x02\ue000-\uf8ff]"),  # _TEXT (and no whitespace at either end)
    re.compile("[\\s<>&\"'`=\x00-\x02\ue000-\uf8ff]"),  # _IN_TAG
    re.compile("[<>\x00-\x02\ue000-\uf8ff]"),  # _DROPPED
)
_DROP_OPENING = re.compile(rf"<(?:script|style|head|title|noscript|template)\b{_A}>", re.I)
_ENTITY_BEFORE = re.compile(r"&[A-Za-z0-9#]*\Z")
_UNSAFE = object()  # a shape converted recipient by recipient


class _Shape:
    __slots__ = ("rules", "pieces")

    def __init__(self, rules: list[int], pieces: list[str | int]) -> None:
        self.rules = rules  # per value: _TEXT, _IN_TAG or _DROPPED
        self.pieces = pieces  # the converted text: its own strings, and value indexes where values go

    def fill(self, values: list[str]) -> str | None:
        """The text with ``values`` put in, or None when a value cannot stand where it is."""
        out: list[str] = []
        for rule, value in zip(self.rules, values):
            if _REFUSED[rule].search(value) or (rule == _TEXT and (value[0].isspace() or value[-1].isspace())):
                return None
        for piece in self.pieces:
            if piece.__class__ is str:
                out.append(piece)  # type: ignore[arg-type]
            else:
                value = values[piece]  # type: ignore[index]
                out.append(" ".join(value.split()) if self.rules[piece] == _TEXT else value)  # type: ignore[index]
        return "".join(out)


class TextShapes:
    """``html_to_text`` of one template's renderings, computed once per shape (see above).

    ``constants``: the strings the template's compiled code holds, which its renderings yield as
    they are (the same objects every time); any other chunk is a value. ``text(chunks)`` returns
    exactly ``html_to_text("".join(chunks))``. Threads may share one: at worst two work out the same
    shape at once. At most ``limit`` shapes are kept, and none more once they hold ``max_chars``
    characters of text (a process keeps the compiled templates of many campaigns); past that, a
    rendering of a shape not kept is converted whole.
    """

    def __init__(self, constants: Iterable[str], *, limit: int = 64, max_chars: int = 256 * 1024) -> None:
        self._constants = [c for c in constants if isinstance(c, str)]  # kept alive: their ids stay theirs
        self._static = frozenset(map(id, self._constants))
        self._shapes: dict[tuple[str | None, ...], _Shape | object] = {}
        self._limit, self._max_chars = limit, max_chars
        self._chars = 0  # the text the kept shapes hold
        self.reused = 0  # texts made from a shape (tests and benchmarks read these)
        self.converted = 0  # texts converted whole

    def text(self, chunks: list[str]) -> str:
        """``html_to_text`` of the chunks joined."""
        static = self._static
        key: list[str | None] = []
        values: list[str] = []
        for chunk in chunks:
            if id(chunk) in static:
                key.append(chunk)
            elif chunk:
                key.append(None)
                # a plain str: autoescaped values are Markup, whose str methods wrap their results
                values.append(chunk if chunk.__class__ is str else str.__str__(chunk))
        shape_key = tuple(key)
        shape = self._shapes.get(shape_key)
        if shape is None and (len(self._shapes) >= self._limit or self._chars >= self._max_chars):
            shape = _UNSAFE  # no room for another shape: working one out each time would cost more
        elif shape is None:
            shape = self._shapes[shape_key] = _shape_of(shape_key)
            if isinstance(shape, _Shape):
                self._chars += sum(len(piece) for piece in shape.pieces if isinstance(piece, str))
        if shape is not _UNSAFE:
            text = shape.fill(values)  # type: ignore[union-attr]
            if text is not None:
                self.reused += 1
                return text
        self.converted += 1
        return html_to_text("".join(chunks))


def _shape_of(key: tuple[str | None, ...]) -> _Shape | object:
    """The shape of a rendering whose chunks are ``key`` (None for each value), or _UNSAFE."""
    slots = key.count(None)
    if not slots or slots > _MAX_SLOTS:
        return _UNSAFE  # nothing to gain, or too many values
    parts: list[str] = []
    slot = 0
    for part in key:
        if part is None:
            parts.append(chr(_FIRST_TOKEN + slot))
            slot += 1
        elif _TOKEN.search(part):
            return _UNSAFE  # the template's own text holds a placeholder character
        else:
            parts.append(part)
    skeleton = "".join(parts)
    if "\x00" in skeleton or "\x01" in skeleton or "\x02" in skeleton:
        return _UNSAFE  # html_to_text drops these first, which moves everything after them
    rules = [_TEXT] * slots
    for match in _TOKEN.finditer(skeleton):
        if _ENTITY_BEFORE.search(skeleton, max(0, match.start() - 40), match.start()):
            return _UNSAFE  # a value could complete an entity that begins before it
        if skeleton[max(0, match.start() - 1):match.start()] == "<" or \
                skeleton[max(0, match.start() - 2):match.start()] == "</":
            return _UNSAFE  # a value could make a tag's name
    if not _rules_in_drops(skeleton, rules):
        return _UNSAFE
    text = _DROP.sub("", skeleton)
    if not _rules_in_tags(text, _ALT, rules, alt=True):
        return _UNSAFE
    text = _ALT.sub(_alt, text)
    if not _rules_in_links(text, rules):
        return _UNSAFE
    text = _LINK.sub(_link, text)
    if not _rules_in_tags(text, _TAG, rules, alt=False):
        return _UNSAFE
    pieces: list[str | int] = []
    at = 0
    converted = html_to_text(skeleton)
    for match in _TOKEN.finditer(converted):
        if converted[at:match.start()]:
            pieces.append(converted[at:match.start()])
        pieces.append(ord(match.group()) - _FIRST_TOKEN)
        at = match.end()
    if converted[at:]:
        pieces.append(converted[at:])
    return _Shape(rules, pieces)


def _tokens_in(text: str, start: int, end: int) -> list[int]:
    """The slots whose placeholders stand in ``text[start:end]``."""
    return [ord(m.group()) - _FIRST_TOKEN for m in _TOKEN.finditer(text, start, end)]


def _name_follows(text: str, start: int, at: int) -> bool:
    """Whether the placeholder at ``at`` could be part of the tag name that begins at ``start``
    (no whitespace between them)."""
    return not any(ch.isspace() for ch in text[start:at])


def _rules_in_drops(skeleton: str, rules: list[int]) -> bool:
    for match in _DROP.finditer(skeleton):
        opening_end = match.start() + 4  # "<!--"
        if match.group(1) is not None:  # script, style...: values in the opening tag are attributes
            opening = _DROP_OPENING.match(skeleton, match.start())
            if opening is None:
                return False
            opening_end = opening.end()
        for token in _TOKEN.finditer(skeleton, match.start(), match.end()):
            slot = ord(token.group()) - _FIRST_TOKEN
            if token.start() < opening_end:
                if _name_follows(skeleton, match.start(), token.start()):
                    return False
                rules[slot] = _IN_TAG
            else:
                rules[slot] = _DROPPED
    return True


def _rules_in_tags(text: str, pattern: re.Pattern[str], rules: list[int], *, alt: bool) -> bool:
    """Values inside the tags ``pattern`` finds are _IN_TAG (an image's quoted alt text: _TEXT);
    a value where the tag's name is makes the shape unsafe."""
    for match in pattern.finditer(text):
        for token in _TOKEN.finditer(text, match.start(), match.end()):
            slot = ord(token.group()) - _FIRST_TOKEN
            if _name_follows(text, match.start(), token.start()):
                return False
            quoted_alt = alt and match.start(1) <= token.start() < match.end(1) and match.group(1)[0] in "\"'"
            rules[slot] = _TEXT if quoted_alt else _IN_TAG
    return True


def _rules_in_links(text: str, rules: list[int]) -> bool:
    """Values in a link's attributes are _IN_TAG. A link whose text holds a value is unsafe (the
    text is compared with the URL), and so is one whose URL holds a value where it could decide
    what the link comes out as: within its first 11 characters ("javascript:"), or where the URL
    could then equal the link's text."""
    for match in _LINK.finditer(text):
        if _tokens_in(text, match.start(2), match.end(2)):
            return False
        for token in _TOKEN.finditer(text, match.start(1), match.end(1)):
            if _name_follows(text, match.start(1), token.start()):
                return False  # "<a" then a value: the value decides whether this is a link
            rules[ord(token.group()) - _FIRST_TOKEN] = _IN_TAG
        href = _HREF.search(match.group(1))
        if href is None or not _TOKEN.search(href.group(1)):
            continue
        url = unescape(_unquote(href.group(1)).strip())
        first = _TOKEN.search(url)
        if first is None or first.start() < 11:
            return False
        shown = " ".join(unescape(_TAG.sub("", match.group(2))).split())
        for candidate in (url, url[7:] if url.lower().startswith("mailto:") else None):
            if not shown or candidate is None:
                continue
            tokens = list(_TOKEN.finditer(candidate))
            head, tail = candidate[:tokens[0].start()], candidate[tokens[-1].end():]
            if shown.startswith(head) and shown.endswith(tail) and len(shown) >= len(head) + len(tail):
                return False  # with some values the URL would be the link's text
    return True
