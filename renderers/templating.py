"""Sandboxed Jinja rendering of a campaign: subject, HTML body (wrapped by its template), plain text.

User-written templates run in Jinja's ``SandboxedEnvironment``: HTML autoescaped, names that are
not in the context are errors, ``None`` renders as "". The context objects themselves (see
``renderers.context``) make a missing field render as "".

Every render of one part (subject, content, wrapper) runs under the same limits, and the check at
create/update (``renderers.context.check_template``) renders with the very same sandbox and limits:

* attributes: the sandbox's own rules (no ``_private`` names, no Python internals);
* ``range()``: at most ``MAX_RANGE`` items (a global of our own; Jinja's ``MAX_RANGE`` is 100000);
* loops: at most ``MAX_LOOP_STEPS`` steps in all. Each compiled ``{% for %}`` iterates a counting
  wrapper (see ``_CodeGenerator``), and so do the filters that go over a list item by item
  (``sort``, ``map``, ``join``...), so nested loops that print nothing are stopped too;
* output: at most ``max_output`` characters (``DEFAULT_MAX_OUTPUT``) per part; and no single
  value may be built larger than that: ``*``, ``+``, ``~``, ``%``, ``format``, ``center``,
  ``replace``, ``join``, printing a list... are checked from their operands before they run, as
  one Python operation cannot be interrupted;
* time: at most ``MAX_RENDER_SECONDS`` of the rendering thread's CPU time (``time.thread_time``,
  so other threads do not count), read every ``_TICK_MASK + 1`` loop steps and calls and counted
  from the first reading (the first 256 steps are not timed: a short render reads no clock): no
  threads, no signals.

A rule broken raises ``TemplateLimit`` (a ``SecurityError``), which rendering reports as a
``SandboxRefusal`` naming the part, the line and a reason a person understands. These bound time
and output; memory only roughly (a template can still hold many large values at once until the
clock stops it).
"""

from __future__ import annotations

import functools
import re
import string
import time
import traceback
import types
from contextvars import ContextVar
from dataclasses import dataclass, field
from html import escape as html_escape
from typing import Any, Callable, Iterable, Iterator, Mapping

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import LoopContext
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from jinja2.utils import Namespace, generate_lorem_ipsum
from markupsafe import Markup

from renderers.errors import HeaderInjection, RenderError
from renderers.plain_text import TextShapes, html_to_text

MiB = 1024 * 1024
DEFAULT_MAX_OUTPUT = 2 * MiB  # characters per rendered part; also the largest value a template may build
MAX_RANGE = 10_000  # items one range() may produce (jinja2.sandbox.MAX_RANGE, 100000, is not used)
MAX_LOOP_STEPS = 100_000  # loop iterations in all, per rendered part
MAX_RENDER_SECONDS = 1.0  # CPU seconds per rendered part
_MAX_EXPONENT = 1000
_MAX_INT_BITS = 1 << 16  # about 19,700 digits: arithmetic past that is refused before it is done
_MAX_LIPSUM = (100, 1000)  # paragraphs, words a paragraph
_MAX_WRAP = 100_000  # characters wordwrap() may wrap
_MAX_INDENT = 16  # tojson(indent=...)
_TICK_MASK = 255  # the clock is read every 256 loop steps and calls

SUBJECT = "message.subject"
CONTENT = "message.content"
WRAPPER = "template"
_NOUNS = {SUBJECT: "subject", CONTENT: "content", WRAPPER: "template"}


class TemplateLimit(SecurityError):
    """A template went past a rule or limit of the sandbox; the message is the reason, for a person."""


class SandboxRefusal(RenderError):
    """Rendering stopped on a rule or limit of the sandbox (not on the recipient's data):
    ``part`` and ``line`` (when known) say where, ``reason`` says what."""

    def __init__(self, part: str, line: int | None, reason: str) -> None:
        super().__init__(f"{part} line {line}: {reason}" if line else f"{part}: {reason}")
        self.part = part
        self.line = line
        self.reason = reason


def _size(chars: int) -> str:
    return f"{chars // MiB} MiB" if chars % MiB == 0 else f"{chars} characters"


def _finalize(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, _CONTAINERS):  # {{ items }}: printed as Python shows it
        _check_text(value)
    return value


# --- the budget of one render: loop steps and CPU time --------------------------------------------


class _Budget:
    __slots__ = ("seconds", "deadline", "steps", "ticks")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        # Set at the first check: reading the thread's CPU clock is a system call (~1 us, more under
        # load), and most renders finish before their first check; none that runs long does.
        self.deadline: float | None = None
        self.steps = 0  # loop iterations
        self.ticks = 0  # loop iterations and calls: every _TICK_MASK + 1 of them, check()

    def tick(self) -> None:
        self.ticks += 1
        if not self.ticks & _TICK_MASK:
            self.check()

    def check(self) -> None:
        if self.steps > MAX_LOOP_STEPS:
            raise TemplateLimit(f"loops of more than {MAX_LOOP_STEPS} steps in all are not allowed")
        clock = time.thread_time()
        if self.deadline is None:
            self.deadline = clock + self.seconds
        elif clock > self.deadline:
            raise TemplateLimit(f"rendering took longer than {self.seconds:g} s")


_BUDGET: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)
"""The budget of the render running in this thread; set by ``render_template``."""


def _counted(iterable: Iterable[Any], budget: _Budget) -> Iterator[Any]:
    for item in iterable:
        budget.steps += 1
        budget.ticks += 1
        if not budget.ticks & _TICK_MASK:
            budget.check()
        yield item


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, with every ``{% for %}`` iterating ``environment.guard_loop(...)``
    and every ``~`` checked for size."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        guarded = nodes.For.__new__(nodes.For)
        guarded.__dict__.update(node.__dict__)  # a copy: the same AST may be compiled again
        line = node.iter.lineno
        guarded.iter = nodes.Call(nodes.EnvironmentAttribute("guard_loop", lineno=line),
                                  [node.iter], [], None, None, lineno=line)
        super().visit_For(guarded, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # CodeGenerator's, checked
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"environment.guard_size({func_name}((")
        for arg in node.nodes:
            self.write("environment.guard_text(")
            self.visit(arg, frame)
            self.write("), ")
        self.write(")))")


# --- values that would grow too large, or take too long to compute in one step ---------------------
# A single Python operation (one str.replace, one sorted()) cannot be stopped by the clock, so what
# could make one huge or slow is refused before it runs, from the sizes of its operands.


def _limit_size(chars: int) -> None:
    if chars > DEFAULT_MAX_OUTPUT:
        raise TemplateLimit(f"building a value larger than {_size(DEFAULT_MAX_OUTPUT)} is not allowed")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number_too_large() -> TemplateLimit:
    return TemplateLimit(f"numbers of more than {_MAX_INT_BITS} bits are not allowed")


_CONTAINERS = (list, tuple, dict, set, frozenset, Namespace)


def _text_size(value: Any, limit: int = DEFAULT_MAX_OUTPUT) -> int:
    """About how long ``str(value)`` is, nested lists and dicts included (a list held twice is
    shown twice); counting stops once past ``limit``, or past MAX_LOOP_STEPS items (as too long),
    so it ends soon on a list that holds itself."""
    size = 0
    stack = [value]
    for _ in range(MAX_LOOP_STEPS):
        if not stack or size > limit:
            return size
        item = stack.pop()
        if isinstance(item, str):
            size += len(item) + 2
        elif _is_int(item):
            size += item.bit_length() // 3 + 2
        elif isinstance(item, _CONTAINERS):
            if isinstance(item, Namespace):
                item = item._Namespace__attrs  # type: ignore[attr-defined]  # its repr shows them
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            else:
                stack.extend(item)
            size += 2 * len(item) + 2
        else:
            size += 24
    return size if not stack else limit + 1


def _check_text(value: Any, *_: Any, **__: Any) -> None:
    """A list or dict that would turn into too long a text (``{{ items }}``, ``items|upper``...)."""
    if isinstance(value, _CONTAINERS):
        _limit_size(_text_size(value))


def _longest(values: Iterable[Any]) -> int:
    return max((_text_size(v) for v in values), default=0)


def _largest_int(values: Iterable[Any]) -> int:
    return max((abs(v) for v in values if _is_int(v)), default=0)


_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?")


def _printf_size(fmt: str, args: Any) -> int:
    """About how long ``fmt % args`` is, at most: each field as long as the longest argument,
    plus its width and precision."""
    values = list(args.values() if isinstance(args, Mapping) else args if isinstance(args, tuple) else (args,))
    size, longest = len(fmt), _longest(values)
    for match in _PRINTF.finditer(fmt):
        size += longest
        for number in match.groups():
            size += _largest_int(values) if number == "*" else int(number or 0)
    return size


def _format_size(fmt: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """About how long ``fmt.format(*args, **kwargs)`` is, at most (as ``_printf_size``)."""
    values = [*args, *kwargs.values()]
    size, longest = len(fmt), _longest(values)
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return size  # format() itself will say what is wrong
    for _text, name, spec, _conversion in fields:
        if name is None:
            continue
        size += longest + sum(int(n) for n in re.findall(r"\d+", spec or ""))
        if spec and "{" in spec:
            size += _largest_int(values)
    return size


def _replace_size(s: Any, old: Any, new: Any, count: Any = None) -> int:
    s, old, new = str(s), str(old), str(new)
    times = s.count(old)
    if _is_int(count) and count >= 0:
        times = min(times, count)
    return len(s) + times * (len(new) - len(old))


def _join_size(separator: Any, items: list[Any]) -> int:
    return _text_size(items) + len(str(separator)) * len(items)


def _indent_size(s: Any, width: Any) -> int:
    s = str(s)
    per_line = len(width) if isinstance(width, str) else width if _is_int(width) else 0
    return len(s) + (s.count("\n") + 1) * per_line


def _checked_str_method(method: Any) -> Callable[..., Any] | None:
    """``method`` (a str's bound method) with a size check first, if it can grow the string."""
    s, name = method.__self__, method.__name__
    if name in ("center", "ljust", "rjust", "zfill"):
        def check(width: Any = 0, *_: Any) -> None:
            if _is_int(width):
                _limit_size(width)
    elif name == "expandtabs":
        def check(tabsize: Any = 8) -> None:
            if _is_int(tabsize):
                _limit_size(len(s) + s.count("\t") * tabsize)
    elif name == "replace":
        def check(old: Any = "", new: Any = "", count: Any = -1) -> None:
            _limit_size(_replace_size(s, old, new, count))
    elif name == "join":
        def call_join(iterable: Any) -> str:
            items = list(iterable)
            _limit_size(_join_size(s, items))
            return method(items)
        return call_join
    else:
        return None

    @functools.wraps(method)
    def checked(*args: Any, **kwargs: Any) -> Any:
        check(*args, **kwargs)
        return method(*args, **kwargs)

    return checked


def _check_slice(value: Any, slices: Any = 1, fill_with: Any = None) -> None:
    if _is_int(slices) and slices > MAX_RANGE:
        raise TemplateLimit(f"slice() into more than {MAX_RANGE} parts is not allowed")


def _check_batch(value: Any, linecount: Any = 1, fill_with: Any = None) -> None:
    if fill_with is not None and _is_int(linecount) and linecount > MAX_RANGE:
        raise TemplateLimit(f"batch() of more than {MAX_RANGE} items is not allowed")


def _check_wordwrap(s: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None,
                    *_: Any, **__: Any) -> None:
    s = str(s)
    if len(s) > _MAX_WRAP:  # textwrap splits long words in quadratic time
        raise TemplateLimit(f"wordwrap() of more than {_MAX_WRAP} characters is not allowed")
    if _is_int(width) and width > 0:
        _limit_size(len(s) + (len(s) // width + s.count("\n") + 1) * len(str(wrapstring or "\n")))


def _check_round(value: Any, precision: Any = 0, *_: Any) -> None:
    if _is_int(precision) and abs(precision) > _MAX_EXPONENT:
        raise TemplateLimit(f"round() to more than {_MAX_EXPONENT} digits is not allowed")


def _check_tojson(value: Any, indent: Any = None) -> None:
    if (_is_int(indent) and indent > _MAX_INDENT) or (isinstance(indent, str) and len(indent) > _MAX_INDENT):
        raise TemplateLimit(f"tojson() with an indent of more than {_MAX_INDENT} is not allowed")
    _check_text(value)


_FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "center": lambda value, width=80, *_: _limit_size(width) if _is_int(width) else None,
    "indent": lambda s, width=4, *_, **__: _limit_size(_indent_size(s, width)),
    "replace": lambda s, old, new, count=None: _limit_size(_replace_size(s, old, new, count)),
    "format": lambda value, *args, **kwargs: _limit_size(_printf_size(str(value), kwargs or args)),
    "slice": _check_slice,
    "batch": _check_batch,
    "wordwrap": _check_wordwrap,
    "round": _check_round,
    "tojson": _check_tojson,
    "join": lambda items, d="", attribute=None: _limit_size(_join_size(d, items)) if attribute is None else None,
    # filters that turn their value into text: a nested list or dict could make a huge one
    **dict.fromkeys(("capitalize", "e", "escape", "forceescape", "lower", "pprint", "safe", "string",
                     "striptags", "title", "trim", "truncate", "upper", "urlencode", "urlize",
                     "wordcount", "xmlattr"), _check_text),
}
# Filters that go over their value item by item in Python: each item counts as a loop step.
_ITEM_FILTERS = ("batch", "groupby", "join", "map", "max", "min", "reject", "rejectattr", "select",
                 "selectattr", "slice", "sort", "sum", "unique")


def _checked_filter(original: Callable[..., Any], check: Callable[..., None] | None,
                    count_items: bool) -> Callable[..., Any]:
    """``original``, first counting its value's items as loop steps (``count_items``: the value is
    then passed on as a list) and running ``check`` on the arguments the template passed (the
    value filtered first; not the context or environment Jinja may pass before it)."""
    skip = 0 if getattr(original, "jinja_pass_arg", None) is None else 1

    @functools.wraps(original)  # keeps jinja_pass_arg
    def checked(*args: Any, **kwargs: Any) -> Any:
        if count_items and len(args) > skip:
            budget = _BUDGET.get()
            value = args[skip]
            value = list(value if budget is None else _counted(value, budget))
            args = (*args[:skip], value, *args[skip + 1:])
        if check is not None:
            check(*args[skip:], **kwargs)
        return original(*args, **kwargs)

    return checked


# --- the sandbox --------------------------------------------------------------------------------


def _range(*args: Any) -> range:
    """``range()`` as the sandbox allows it: at most MAX_RANGE items."""
    rng = range(*args)
    try:
        items = len(rng)
    except OverflowError:
        items = MAX_RANGE + 1
    if items > MAX_RANGE:
        raise TemplateLimit(f"range() of more than {MAX_RANGE} items is not allowed")
    return rng


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
    paragraphs, words = _MAX_LIPSUM
    if (_is_int(n) and n > paragraphs) or (_is_int(max) and max > words) or (_is_int(min) and min > words):
        raise TemplateLimit(f"lipsum() of more than {paragraphs} paragraphs of {words} words is not allowed")
    return generate_lorem_ipsum(n, html, min, max)


_METHODS = (types.BuiltinMethodType, types.MethodType)


class _Sandbox(SandboxedEnvironment):
    """The sandbox, plus the limits above: ``range``, loop steps, CPU time, value sizes, numbers."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _CodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals["range"] = _range
        self.globals["lipsum"] = _lipsum
        for name in {*_FILTER_CHECKS, *_ITEM_FILTERS}:
            self.filters[name] = _checked_filter(self.filters[name], _FILTER_CHECKS.get(name),
                                                 count_items=name in _ITEM_FILTERS)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # The context's records (renderers.context.Record) hold plain values and lead nowhere else:
        # their attributes are their items, read without the checks meant for Python objects
        # (the same result, a few microseconds less on every ``contact.x`` a recipient's render reads).
        if getattr(type(obj), "_plain_items", False) and attribute[:1] != "_":
            return obj[attribute]
        return super().getattr(obj, attribute)

    def guard_loop(self, iterable: Any) -> Any:
        """What every compiled ``{% for %}`` iterates: ``iterable``, each step counted."""
        budget = _BUDGET.get()
        return iterable if budget is None else _counted(iterable, budget)

    def guard_size(self, value: Any) -> Any:
        """The result of ``~``, refused when too large."""
        _limit_size(len(value))
        return value

    def guard_text(self, value: Any) -> Any:
        """An operand of ``~``, refused when it would turn into too long a text."""
        if isinstance(value, _CONTAINERS):
            _check_text(value)
        return value

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        budget = _BUDGET.get()
        if budget is not None:
            budget.tick()
        if isinstance(__obj, LoopContext) and args:  # loop(children) in a recursive for: counted too
            args = (__self.guard_loop(args[0]), *args[1:])
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and _is_int(times):
                    if len(seq) * times > DEFAULT_MAX_OUTPUT:
                        raise TemplateLimit(f"repeating a value to more than {_size(DEFAULT_MAX_OUTPUT)} "
                                            "is not allowed")
                    if isinstance(seq, (list, tuple)):
                        _limit_size(_text_size(seq) * times)
            if _is_int(left) and _is_int(right) and left.bit_length() + right.bit_length() > _MAX_INT_BITS:
                raise _number_too_large()
        elif operator == "**":
            if isinstance(right, (int, float)) and abs(right) > _MAX_EXPONENT:
                raise TemplateLimit(f"exponents above {_MAX_EXPONENT} are not allowed")
            if _is_int(left) and _is_int(right) and right > 0 and left.bit_length() * right > _MAX_INT_BITS:
                raise _number_too_large()
        elif operator == "%" and isinstance(left, str):
            _limit_size(_printf_size(left, right))
        result = self.binop_table[operator](left, right)
        if operator == "+" and isinstance(result, (str, list, tuple)):
            _limit_size(len(result))
        return result

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        reason = "names starting with '_' are private" if attribute.startswith("_") else "it is internal to Python"
        return self.undefined(f"'{attribute}' is not allowed: {reason}", name=attribute, obj=obj,
                              exc=TemplateLimit)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if not isinstance(value, _METHODS):  # the common case, on every attribute a template reads
            return None
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:  # str.format / str.format_map: sandboxed by Jinja, sized here
            fmt, is_map = value.__self__, value.__name__ == "format_map"

            @functools.wraps(wrapped)
            def format_checked(*args: Any, **kwargs: Any) -> str:
                mapping = args[0] if is_map and args and isinstance(args[0], Mapping) else kwargs
                _limit_size(_format_size(fmt, () if is_map else args, mapping))
                return wrapped(*args, **kwargs)

            return format_checked
        if isinstance(getattr(value, "__self__", None), str):  # Markup's methods are Python methods
            return _checked_str_method(value)
        return None


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
    # The globals as a plain dict, not Jinja's ChainMap over the environment's: every render copies
    # them into its context, and iterating a ChainMap is Python code (a few % of a render). The
    # environment's globals are set when it is made and never change.
    return env.template_class.from_code(env, code, dict(env.make_globals(None)))


def render_template(
    template: Template,
    context: Mapping[str, Any],
    *,
    max_output: int = DEFAULT_MAX_OUTPUT,
    max_seconds: float = MAX_RENDER_SECONDS,
) -> str:
    """Render a compiled template under the sandbox's limits (see the module's docstring).

    A rule or limit broken is a SandboxRefusal; any other failure (the template and this
    recipient's data) a RenderError, with the part and line.
    """
    return "".join(render_chunks(template, context, max_output=max_output, max_seconds=max_seconds))


def render_chunks(
    template: Template,
    context: Mapping[str, Any],
    *,
    max_output: int = DEFAULT_MAX_OUTPUT,
    max_seconds: float = MAX_RENDER_SECONDS,
) -> list[str]:
    """``render_template``'s output as the pieces the template yielded: its own text (the very
    strings its code holds) and the values it printed, in order."""
    part = template.filename or "template"
    parts: list[str] = []
    size = 0
    token = _BUDGET.set(_Budget(max_seconds))
    try:
        for chunk in template.generate(context):
            size += len(chunk)
            if size > max_output:
                raise SandboxRefusal(part, None, f"the rendered {_NOUNS.get(part, part)} would exceed "
                                                 f"{_size(max_output)}")
            parts.append(chunk)
    except RenderError:
        raise
    except (SecurityError, RecursionError) as exc:
        raise SandboxRefusal(part, _line(part, exc), _describe(exc)) from exc
    except Exception as exc:  # anything the template did wrong, reported with its line
        line = _line(part, exc)
        raise RenderError(f"{part} line {line}: {_describe(exc)}" if line else
                          f"{part}: {_describe(exc)}") from exc
    finally:
        _BUDGET.reset(token)
    return parts


def template_constants(template: Template) -> list[str]:
    """The strings a compiled template's code holds (its own text among them), nested code too."""
    found: list[str] = []
    codes = [template.root_render_func.__code__, *(block.__code__ for block in template.blocks.values())]
    while codes:
        code = codes.pop()
        for constant in code.co_consts:
            if isinstance(constant, str):
                found.append(constant)
            elif isinstance(constant, types.CodeType):
                codes.append(constant)
    return found


def subject_problem(subject: str) -> str | None:
    """Why a rendered (stripped) subject cannot be a Subject header, or None."""
    if _LINE_BREAK.search(subject):
        return "the rendered subject contains a line break or control character"
    return None


def sandbox_problems(template: Template, context: Mapping[str, Any], *, subject: bool = False) -> list[str]:
    """Render ``template`` once, as rendering does, and say which rule or limit of the sandbox it
    breaks, as ``["line N: reason"]`` (or ``[]``).

    Only the sandbox's refusals (and, for a ``subject``, a line break) are reported: those do not
    depend on the recipient. An error from the values in ``context`` is not: a sample contact with
    empty fields is not every recipient.
    """
    try:
        rendered = render_template(template, context)
    except SandboxRefusal as exc:
        return [f"line {exc.line}: {exc.reason}" if exc.line else exc.reason]
    except RenderError:
        return []
    problem = subject_problem(rendered.strip()) if subject else None
    return [problem] if problem else []


def _line(part: str, exc: BaseException) -> int | None:
    line = getattr(exc, "lineno", None)
    if line is None:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == part]
        line = frames[-1].lineno if frames else None
    return line


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TemplateLimit):
        return str(exc)
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
    # The text alternatives of the content and wrapper's renderings, by shape (renderers.plain_text).
    texts: TextShapes = field(default_factory=lambda: TextShapes(()), compare=False, repr=False)

    def render(self, context: Mapping[str, Any], *, footer: bool = True, text: bool = True) -> Rendered:
        """Render for one recipient; ``context`` comes from ``renderers.context.build_context``.

        With ``footer`` and an ``unsubscribe_url`` in the context, an unsubscribe footer is added
        unless the body already links to that URL. Without ``text`` the text alternative is left
        empty (a letter has none).
        """
        subject = ""
        if self.subject is not None:
            subject = render_template(self.subject, context, max_output=self.max_output).strip()
            problem = subject_problem(subject)
            if problem:
                raise HeaderInjection(f"{SUBJECT}: {problem}")
        chunks = render_chunks(self.content, context, max_output=self.max_output)
        html = "".join(chunks)
        if self.wrapper is not None:
            wrapped = {**context, "content": Markup(html)}
            outer = render_chunks(self.wrapper, wrapped, max_output=self.max_output)
            # The content printed by the wrapper stands for the content's own chunks: the wrapper's
            # text and the content's, with the values in between, make one shape.
            flat: list[str] = []
            for chunk in outer:
                if len(chunk) == len(html) and chunk == html:
                    flat.extend(chunks)
                else:
                    flat.append(chunk)
            chunks = flat
            html = "".join(outer)
        plain = self.texts.text(chunks) if text else ""
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
    compiled_content = compile_template(content, part=CONTENT)
    compiled_wrapper = None if wrapper is None else compile_template(wrapper, part=WRAPPER)
    constants = template_constants(compiled_content)
    if compiled_wrapper is not None:
        constants += template_constants(compiled_wrapper)
    return CompiledCampaign(
        subject=None if subject is None else compile_template(subject, part=SUBJECT, html=False),
        content=compiled_content,
        wrapper=compiled_wrapper,
        max_output=max_output,
        texts=TextShapes(constants),
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
