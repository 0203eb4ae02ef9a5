"""The template context: the names a template may use, the objects it sees, and a checker.

Templates see ``contact`` (``id``, ``b2c``, ``team_id``, ``status``, ``created_at``,
``updated_at``, each fixed field by name, ``fixed_fields.<name>``, ``custom_fields.<any name>``,
``account`` (``id``, ``name``), ``user`` (seed user fields)), ``campaign`` (``id``, ``name``),
``sender`` (seed user fields), ``unsubscribe_url`` and, in a wrapper template only, ``content``.
A field without a value renders as ""; a name or attribute outside this vocabulary is an error.

``check_template`` is what create and update run: static checks of the names, then one render of
the template against ``sample_context`` (the same shape, every field empty) in the same sandbox and
under the same limits as every recipient's render.
"""

from __future__ import annotations

import difflib
import functools
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping

from jinja2 import TemplateSyntaxError, Undefined, meta, nodes
from jinja2.exceptions import UndefinedError
from markupsafe import Markup

from renderers.templating import CONTENT, HTML_ENV, SUBJECT, TEXT_ENV, WRAPPER, sandbox_problems

USER_FIELDS: tuple[str, ...] = (
    "id", "first_name", "last_name", "phone_number", "job_title", "email",
    "email_notifications", "profile_picture", "system_user", "created_at", "updated_at",
)
ACCOUNT_FIELDS: tuple[str, ...] = ("id", "name")
CAMPAIGN_FIELDS: tuple[str, ...] = ("id", "name")
CONTACT_FIELDS: tuple[str, ...] = ("id", "b2c", "team_id", "status", "created_at", "updated_at")


class Missing(Undefined):
    """A value that is absent or null: renders as "", behaves like "" and triggers ``default``."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        return "an empty value has no attributes or items"

    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__":
            raise AttributeError(name)
        return getattr("", name)  # ``.upper()`` and friends act on ""

    def __add__(self, other: Any) -> Any:
        return "" + other

    def __radd__(self, other: Any) -> Any:
        return other + ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Missing) or other == "" or other is None

    def __hash__(self) -> int:
        return hash("")

    def __int__(self) -> int:
        raise ValueError("no value")

    def __float__(self) -> float:
        raise ValueError("no value")


MISSING = Missing()


class Record:
    """A read-only object of the context: ``record.name`` and ``record["name"]``.

    A closed record (the default) knows its field names and refuses others; an open one (custom
    fields) answers any name, with MISSING when it has no value.
    """

    __slots__ = ("_label", "_values", "_open")
    # Tells the sandbox that attribute access reads the items and nothing else (no attribute
    # without a leading "_" exists on the class): it may skip its checks of Python objects.
    _plain_items = True

    def __init__(self, label: str, values: Mapping[str, Any], *, is_open: bool = False) -> None:
        self._label = label
        self._values = values
        self._open = is_open

    def __getitem__(self, key: Any) -> Any:
        try:
            value = self._values[key]
        except (KeyError, TypeError):
            if self._open:
                return MISSING
            raise UndefinedError(f"'{self._label}' has no attribute {key!r}") from None
        return MISSING if value is None else value

    def __getattr__(self, name: str) -> Any:
        if name[:1] == "_":
            raise AttributeError(name)
        try:
            return self[name]
        except UndefinedError:
            raise AttributeError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"<{self._label}>"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return value


def _pairs(values: Any) -> dict[str, Any]:
    """``{name: value}``, also from the seed's list of ``{"name", "value", ...}`` objects."""
    if not values:
        return {}
    if isinstance(values, Mapping):
        return {str(k): _plain(v) for k, v in values.items()}
    return {str(item["name"]): _plain(item.get("value")) for item in values}


def _closed(label: str, source: Mapping[str, Any] | None, fields: Iterable[str]) -> Record:
    source = source or {}
    return Record(label, {name: _plain(source.get(name)) for name in fields})


def build_context(
    contact: Mapping[str, Any],
    campaign: Mapping[str, Any] | Record,
    sender: Mapping[str, Any] | Record | None,
    unsubscribe_url: str | None,
    *,
    fixed_field_names: Iterable[str] = (),
) -> dict[str, Any]:
    """The context one recipient's templates render with, from plain dicts.

    ``contact`` carries ``id``, ``b2c``, ``fixed_fields`` ({name: value}, or the seed's list),
    ``custom_fields`` ({name: value}), ``account`` and ``user`` (dicts or None), ``team_id``,
    ``status``, ``created_at``. ``fixed_field_names`` (the catalogue) makes every fixed field a
    known name even when this contact has no value for it. ``campaign``, ``sender`` and the
    contact's ``user`` may also be records made by ``records_of`` (shared by many recipients).
    """
    fixed = dict.fromkeys(fixed_field_names)
    fixed.update(_pairs(contact.get("fixed_fields")))
    return context_of(contact_record(fixed.get, contact.get, tuple(fixed)), campaign, sender, unsubscribe_url)


def context_of(
    contact: Record,
    campaign: Mapping[str, Any] | Record,
    sender: Mapping[str, Any] | Record | None,
    unsubscribe_url: str | None,
) -> dict[str, Any]:
    """``build_context`` with the contact's record already made (``contact_record``)."""
    return {
        "contact": contact,
        "campaign": records_of("campaign", campaign),
        "sender": records_of("sender", sender),
        "unsubscribe_url": unsubscribe_url or MISSING,
    }


class _Lazy(dict):  # type: ignore[type-arg]
    """A record's values, each made by ``make(name)`` when first read and kept (read again, it is a
    dict lookup); ``names`` are all there are. A contact's record has ~25 names and a template
    reads a handful: making every value for every recipient cost ~12 us of a ~250 us email."""

    __slots__ = ("_names", "_make")

    def __init__(self, names: dict[str, None], make: Callable[[str], Any]) -> None:
        super().__init__()
        self._names, self._make = names, make

    def __missing__(self, key: Any) -> Any:
        if key not in self._names:  # an unhashable key raises TypeError here, as a dict would
            raise KeyError(key)
        value = self[key] = self._make(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, key: object) -> bool:
        return key in self._names


_OWN_RECORDS = ("fixed_fields", "custom_fields", "account", "user")
_CONTACT_OWN = frozenset(CONTACT_FIELDS) | frozenset(_OWN_RECORDS)


@functools.lru_cache(maxsize=64)
def _contact_names(fixed_names: tuple[str, ...]) -> tuple[dict[str, None], dict[str, None]]:
    fixed = dict.fromkeys(fixed_names)
    return fixed, {**fixed, **dict.fromkeys(CONTACT_FIELDS), **dict.fromkeys(_OWN_RECORDS)}


def contact_record(fixed: Callable[[str], Any], fields: Callable[[str], Any], fixed_names: tuple[str, ...]) -> Record:
    """The ``contact`` a template sees, each value read when the template first asks for it.

    ``fixed(name)`` is the value of the fixed field ``name`` (one of ``fixed_names``, all known
    names, with or without a value); ``fields(name)`` the contact's ``id``, ``b2c``, ``team_id``,
    ``status``, ``created_at``, ``updated_at``, ``custom_fields`` ({name: value} or None),
    ``account`` ({"id", "name"} or None) and ``user`` (a dict, a record or None).
    """
    fixed_values, names = _contact_names(fixed_names)

    def make(name: str) -> Any:
        if name not in _CONTACT_OWN:
            return _plain(fixed(name))
        if name == "fixed_fields":
            return Record("contact.fixed_fields", _Lazy(fixed_values, lambda field: _plain(fixed(field))))
        if name == "custom_fields":
            return Record("contact.custom_fields", _pairs(fields(name)), is_open=True)
        if name == "account":
            return _closed("contact.account", fields(name), ACCOUNT_FIELDS)
        if name == "user":
            return records_of("contact.user", fields(name))
        return _plain(fields(name))

    return Record("contact", _Lazy(names, make))


_FIELDS_OF = {"campaign": CAMPAIGN_FIELDS, "sender": USER_FIELDS, "contact.user": USER_FIELDS}


def records_of(label: str, source: Mapping[str, Any] | Record | None) -> Record:
    """The read-only record a template sees as ``campaign``, ``sender`` or ``contact.user``, from
    its dict; a Record is already one (made once for many recipients) and is returned as it is."""
    if isinstance(source, Record):
        return source
    return _closed(label, source, _FIELDS_OF[label])


def sample_context(fixed_fields: Iterable[str], *, is_wrapper: bool) -> dict[str, Any]:
    """A context of the shape rendering passes, every value empty: a contact, a campaign and a
    sender without values, no unsubscribe URL and, for a wrapper template, empty ``content``."""
    context = build_context({}, {}, None, None, fixed_field_names=fixed_fields)
    if is_wrapper:
        context["content"] = Markup("")
    return context


# The vocabulary as a tree: a dict of names, LEAF for a value, OPEN for "any name, then a value".
LEAF = "leaf"
OPEN = "open"
_VALUE_ATTRS = frozenset(name for name in dir(str) if not name.startswith("_"))
_LOADERS = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)
_MACRO_NAMES = frozenset({"caller", "varargs", "kwargs"})


def vocabulary(fixed_fields: Iterable[str], *, is_wrapper: bool) -> dict[str, Any]:
    """The names a template may use, as a tree (see LEAF / OPEN)."""
    fixed = {name: LEAF for name in fixed_fields}
    user = {name: LEAF for name in USER_FIELDS}
    contact = {
        **fixed,
        **{name: LEAF for name in CONTACT_FIELDS},
        "fixed_fields": fixed,
        "custom_fields": OPEN,
        "account": {name: LEAF for name in ACCOUNT_FIELDS},
        "user": user,
    }
    names: dict[str, Any] = {
        "contact": contact,
        "campaign": {name: LEAF for name in CAMPAIGN_FIELDS},
        "sender": user,
        "unsubscribe_url": LEAF,
    }
    if is_wrapper:
        names["content"] = LEAF
    return names


def check_template(
    source: str, *, fixed_fields: Iterable[str], is_wrapper: bool, subject: bool = False
) -> list[str]:
    """Problems a person must fix before ``source`` can render, e.g.
    ``"line 3: 'contact' has no attribute 'frist_name' (did you mean 'first_name'?)"``.

    Finds syntax errors, unknown filters and tests, names outside the vocabulary, unknown
    attributes of known objects (also ``contact["name"]``), private attributes, ``content``
    outside a wrapper template and attempts to load other templates. Then renders the template
    once against ``sample_context``, in the sandbox rendering uses (the text one for a ``subject``)
    and under its limits, and reports what the sandbox refuses: private or internal attributes
    reached at run time, ``range()`` too long, loops too long, output or values too large,
    rendering too slow, endless recursion, and a line break in a subject. An empty list means fine.
    """
    try:
        ast = HTML_ENV.parse(source)
    except TemplateSyntaxError as exc:
        return [f"line {exc.lineno}: {exc.message}"]
    tracker = meta.TrackingCodeGenerator(_TOLERANT_ENV)  # type: ignore[no-untyped-call]
    try:
        tracker.visit(ast)
    except TemplateSyntaxError as exc:  # e.g. a block defined twice
        return [f"line {exc.lineno}: {exc.message}"]
    checker = _Checker(vocabulary(fixed_fields, is_wrapper=is_wrapper),
                       tracker.undeclared_identifiers)
    checker.visit(ast, in_macro=False)
    if checker.problems:
        return checker.problems
    env = TEXT_ENV if subject else HTML_ENV
    part = WRAPPER if is_wrapper else SUBJECT if subject else CONTENT
    try:
        code = env.compile(ast, name=part, filename=part)
    except TemplateSyntaxError as exc:
        return [f"line {exc.lineno}: {exc.message or exc}"]
    template = env.template_class.from_code(env, code, env.make_globals(None))
    return sandbox_problems(template, sample_context(fixed_fields, is_wrapper=is_wrapper),
                            subject=subject)


class _AnyName(dict):  # type: ignore[type-arg]
    """Filters/tests for the name tracker: unknown ones are reported by the checker instead."""

    def get(self, key: Any, default: Any = None) -> Any:
        return super().get(key, _tolerated)


def _tolerated(*args: Any, **kwargs: Any) -> None:
    return None


_TOLERANT_ENV = HTML_ENV.overlay()
_TOLERANT_ENV.filters = _AnyName(HTML_ENV.filters)
_TOLERANT_ENV.tests = _AnyName(HTML_ENV.tests)


class _Checker:
    def __init__(self, names: dict[str, Any], undeclared: set[str]) -> None:
        self.names = names
        self.undeclared = undeclared
        self.problems: list[str] = []

    def report(self, line: int | None, message: str) -> None:
        problem = f"line {line}: {message}" if line else message
        if problem not in self.problems:
            self.problems.append(problem)

    def visit(self, node: nodes.Node, *, in_macro: bool) -> None:
        if isinstance(node, _LOADERS):
            self.report(node.lineno, "a template cannot extend, include or import other templates")
        if isinstance(node, (nodes.Macro, nodes.CallBlock)):
            in_macro = True
        if isinstance(node, nodes.Filter) and node.name not in HTML_ENV.filters:
            self.report(node.lineno, f"there is no filter named '{node.name}'"
                                     f"{_hint(node.name, HTML_ENV.filters)}")
        if isinstance(node, nodes.Test) and node.name not in HTML_ENV.tests:
            self.report(node.lineno, f"there is no test named '{node.name}'"
                                     f"{_hint(node.name, HTML_ENV.tests)}")
        if isinstance(node, (nodes.Getattr, nodes.Getitem)):
            self.visit_path(node, in_macro=in_macro)
            return
        if isinstance(node, nodes.Name) and node.ctx == "load":
            self.check_path(node, [], in_macro=in_macro)
        for child in node.iter_child_nodes():
            self.visit(child, in_macro=in_macro)

    def visit_path(self, node: nodes.Node, *, in_macro: bool) -> None:
        keys: list[str | None] = []
        while isinstance(node, (nodes.Getattr, nodes.Getitem)):
            if isinstance(node, nodes.Getattr):
                keys.append(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                keys.append(node.arg.value)
            else:
                keys.append(None)
                self.visit(node.arg, in_macro=in_macro)
            node = node.node
        keys.reverse()
        if isinstance(node, nodes.Name) and node.ctx == "load":
            self.check_path(node, keys, in_macro=in_macro)
            return
        for key in keys:
            if key is not None and key.startswith("_"):
                self.report(node.lineno, f"'{key}' is not allowed: names starting with '_' are private")
                break
        self.visit(node, in_macro=in_macro)

    def check_path(self, name: nodes.Name, keys: list[str | None], *, in_macro: bool) -> None:
        line = name.lineno
        if name.name not in self.undeclared:
            # set, looped over or passed in by the template itself, or a global (range, cycler...)
            for key in keys:
                if key is not None and key.startswith("_"):
                    self.report(line, f"'{key}' is not allowed: names starting with '_' are private")
                    break
            return
        if name.name not in self.names:
            if in_macro and name.name in _MACRO_NAMES:
                return
            if name.name == "content":
                self.report(line, "'content' can only be used in a template (it is where the "
                                  "message content goes), not in the message itself")
            else:
                known = ", ".join(sorted(self.names))
                self.report(line, f"'{name.name}' is not a known name{_hint(name.name, self.names)}"
                                  f"; the names are: {known}")
            return
        spec: Any = self.names[name.name]
        dotted = name.name
        for key in keys:
            if key is None:
                return  # a computed subscript cannot be checked here; rendering will
            if key.startswith("_"):
                self.report(line, f"'{key}' is not allowed: names starting with '_' are private")
                return
            if spec == LEAF:
                if key not in _VALUE_ATTRS:
                    self.report(line, f"'{dotted}' is a value; it has no attribute '{key}'")
                return
            if spec == OPEN:
                spec = LEAF
            elif key not in spec:
                self.report(line, f"'{dotted}' has no attribute '{key}'{_hint(key, spec)}")
                return
            else:
                spec = spec[key]
            dotted = f"{dotted}.{key}"


def _hint(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
