"""Sandboxed Jinja rendering of a campaign: subject, HTML body (wrapped by its template), plain text.

User-written templates run in Jinja's ``SandboxedEnvironment``: HTML autoescaped, names that are
not in the context are errors, ``None`` renders as "". The context objects themselves (see
``renderers.context``) make a missing field render as "".
"""

from __future__ import annotations

import functools
import re
import traceback
from dataclasses import dataclass
from html import escape as html_escape
from html import unescape
from typing import Any, Mapping

from jinja2 import StrictUndefined, Template, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from markupsafe import Markup

from renderers.errors import HeaderInjection, RenderError

DEFAULT_MAX_OUTPUT = 2 * 1024 * 1024  # characters per rendered part
_MAX_EXPONENT = 1000

SUBJECT = "message.subject"
CONTENT = "message.content"
WRAPPER = "template"


def _finalize(value: Any) -> Any:
    return "" if value is None else value


class _Sandbox(SandboxedEnvironment):
    """The sandbox, plus a guard on ``*`` and ``**`` so ``{{ 'x' * 10**9 }}`` cannot eat memory."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
                    if len(seq) * times > DEFAULT_MAX_OUTPUT:
                        raise SecurityError("the repeated value would be too large")
        elif operator == "**" and isinstance(right, (int, float)) and abs(right) > _MAX_EXPONENT:
            raise SecurityError(f"exponents above {_MAX_EXPONENT} are not allowed")
        return super().call_binop(context, operator, left, right)


def _environment(autoescape: bool) -> SandboxedEnvironment:
    return _Sandbox(
        autoescape=autoescape,
        undefined=StrictUndefined,
        finalize=_finalize,
        keep_trailing_newline=True,
    )


HTML_ENV: SandboxedEnvironment = _environment(autoescape=True)
"""For HTML output (message content, wrappers, letters): values are autoescaped."""
TEXT_ENV: SandboxedEnvironment = _environment(autoescape=False)
"""For plain-text output such as the Subject: nothing is escaped."""


def compile_template(source: str, *, part: str, html: bool = True) -> Template:
    """Compile ``source`` in the sandbox; ``part`` names it in errors (``message.content``...)."""
    env = HTML_ENV if html else TEXT_ENV
    try:
        code = env.compile(source, name=part, filename=part)
    except TemplateSyntaxError as exc:
        raise RenderError(f"{part} line {exc.lineno}: {exc.message}") from None
    return env.template_class.from_code(env, code, env.make_globals(None))


def render_template(
    template: Template, context: Mapping[str, Any], *, max_output: int = DEFAULT_MAX_OUTPUT
) -> str:
    """Render a compiled template; any failure or an output over ``max_output`` is a RenderError."""
    part = template.filename or "template"
    parts: list[str] = []
    size = 0
    try:
        for chunk in template.generate(context):
            size += len(chunk)
            if size > max_output:
                raise RenderError(f"{part}: the output is larger than {max_output} characters")
            parts.append(chunk)
    except RenderError:
        raise
    except Exception as exc:  # anything the template did wrong, reported with its line
        raise RenderError(f"{_where(part, exc)}: {_describe(exc)}") from exc
    return "".join(parts)


def _where(part: str, exc: BaseException) -> str:
    line = getattr(exc, "lineno", None)
    if line is None:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == part]
        line = frames[-1].lineno if frames else None
    return f"{part} line {line}" if line else part


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SecurityError):
        return f"not allowed in a template: {exc}"
    if isinstance(exc, RecursionError):
        return "the template calls itself without end"
    message = getattr(exc, "message", None) or str(exc)
    return message if message else type(exc).__name__


@dataclass(frozen=True)
class Rendered:
    """One recipient's rendered email: a one-line subject, the HTML body and its text alternative."""

    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class CompiledCampaign:
    """A campaign's templates compiled once; render per recipient with ``render(context)``."""

    subject: Template | None
    content: Template
    wrapper: Template | None
    max_output: int = DEFAULT_MAX_OUTPUT

    def render(self, context: Mapping[str, Any], *, footer: bool = True, text: bool = True) -> Rendered:
        """Render for one recipient; ``context`` comes from ``renderers.context.build_context``.

        With ``footer`` and an ``unsubscribe_url`` in the context, an unsubscribe footer is added
        unless the body already links to that URL. Without ``text`` the text alternative is left
        empty (a letter has none).
        """
        subject = ""
        if self.subject is not None:
            subject = render_template(self.subject, context, max_output=self.max_output).strip()
            if _LINE_BREAK.search(subject):
                raise HeaderInjection(
                    f"{SUBJECT}: the rendered subject contains a line break or control character"
                )
        html = render_template(self.content, context, max_output=self.max_output)
        if self.wrapper is not None:
            wrapped = {**context, "content": Markup(html)}
            html = render_template(self.wrapper, wrapped, max_output=self.max_output)
        plain = html_to_text(html) if text else ""
        url = context.get("unsubscribe_url")
        if footer and isinstance(url, str) and url:
            html, plain = add_unsubscribe_footer(html, plain, url)
        return Rendered(subject=subject, html=html, text=plain)


@functools.lru_cache(maxsize=256)
def compile_campaign(
    subject: str | None,
    content: str,
    wrapper: str | None,
    *,
    max_output: int = DEFAULT_MAX_OUTPUT,
) -> CompiledCampaign:
    """Compile a campaign's subject (text), content and optional wrapper template (HTML).

    Cached on the sources, so a process compiles each campaign once. Raises RenderError naming
    the part and line of a syntax error.
    """
    return CompiledCampaign(
        subject=None if subject is None else compile_template(subject, part=SUBJECT, html=False),
        content=compile_template(content, part=CONTENT),
        wrapper=None if wrapper is None else compile_template(wrapper, part=WRAPPER),
        max_output=max_output,
    )


_LINE_BREAK = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_FOOTER_HTML = (
    '<p style="font-size:12px;color:#777777;margin-top:24px">'
    'If you no longer want these emails, <a href="{url}">unsubscribe</a>.</p>'
)


def add_unsubscribe_footer(html: str, text: str, unsubscribe_url: str) -> tuple[str, str]:
    """Add a small unsubscribe footer (URL escaped) to the HTML and text, unless already linked."""
    url = html_escape(unsubscribe_url, quote=True)
    if f'href="{url}"' not in html and f"href='{url}'" not in html:
        footer = _FOOTER_HTML.format(url=url)
        ends = list(_BODY_END.finditer(html))
        if ends:
            at = ends[-1].start()
            html = html[:at] + footer + html[at:]
        else:
            html = html + footer
    if unsubscribe_url not in text:
        text = f"{text.rstrip()}\n\nUnsubscribe: {unsubscribe_url}\n"
    return html, text


# html_to_text works in a few regex passes (about 3x faster than html.parser). No pattern can
# scan past the next "<" on a failed attempt, so odd markup costs linear time, not quadratic.
_A = r"""[^<>"']*(?:(?:"[^"<]*"|'[^'<]*')[^<>"']*)*"""  # attributes; quoted values may hold ">"
_DROP = re.compile(
    rf"<!--.*?(?:-->|\Z)|<(script|style|head|title|noscript|template)\b{_A}>.*?(?:</\1\s*>|\Z)",
    re.S | re.I,
)
_ALT = re.compile(rf"""<img\b{_A}?\salt\s*=\s*("[^"<]*"|'[^'<]*'|[^\s<>]+){_A}>""", re.I)
_LINK = re.compile(rf"<a\b({_A})>([^<]*(?:<(?!/?a\b)[^<]*)*)</a\s*>", re.I)
_HREF = re.compile(r"""\shref\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)""", re.I)
_TAG = re.compile(rf"<(/?)([A-Za-z][^\s/<>]*){_A}>|<![^<>]*>|<\?[^<>]*>")
_BLOCKS = {
    **dict.fromkeys(("p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote",
                     "hr", "pre", "dl"), "\x01"),
    **dict.fromkeys(("div", "tr", "section", "article", "header", "footer", "main", "nav",
                     "aside", "address", "dt", "dd", "figure", "figcaption", "form", "center"),
                    "\x00"),
    "br": "\x02", "td": " ", "th": " ",
}
# Block tags leave markers: \x01 a paragraph, \x00 a line, \x02 a <br>. A run of markers becomes
# a blank line when it holds a paragraph or two <br>, else one line break.
_BREAKS = re.compile(r" ?[\x00-\x02][\x00-\x02 ]*")
_BLANKS = re.compile(r"\n{3,}")


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


def _tag(match: re.Match[str]) -> str:
    name = match.group(2)
    if name is None:
        return ""
    name = name.lower()
    if name == "li":
        return "" if match.group(1) else "\x00- "
    return _BLOCKS.get(name, "")


def _break(match: re.Match[str]) -> str:
    run = match.group()
    return "\n\n" if "\x01" in run or run.count("\x02") > 1 else "\n"


def html_to_text(html: str) -> str:
    """A plain-text alternative of an HTML body: tags stripped, entities unescaped, each link
    kept as ``text (url)``, whitespace collapsed, blocks on their own lines."""
    text = _DROP.sub("", re.sub("[\x00-\x02]", "", html))
    text = _LINK.sub(_link, _ALT.sub(_alt, text))
    text = _TAG.sub(_tag, text)
    text = _BREAKS.sub(_break, " ".join(unescape(text).split()))
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = _BLANKS.sub("\n\n", text).strip()
    return text + "\n" if text else ""
