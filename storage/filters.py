"""The campaign filter language: parse and validate a campaign's ``filter`` into a tree.

A ``filter`` is a list joined by AND. Each element is a condition
``{"field", "operator", "value", "not"?}`` or a group ``{"or": bool, "filters": [...], "not"?}``.
Values are checked and normalised once here (text folded, numbers as doubles, dates as
``Y-m-d H:i:s``), so ``storage.filter_sql`` and ``storage.filter_eval`` only translate.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from storage.coerce import as_date, fold, is_date_value, is_number_value
from storage.errors import ValidationFailed
from storage.fields import FIXED_FIELD_NAMES

# The accepted ``field`` paths; ``<name>`` is a fixed field name or a custom field key.
FIELD_PATHS: tuple[str, ...] = (
    "contact.fixed_fields.<name>",
    "contact.custom_fields.<name>",
    "contact.b2c",
    "contact.status",
    "contact.team_id",
    "contact.user.id",
    "contact.account.name",
    "contact.created_at",
)
OPERATORS: tuple[str, ...] = (
    "eq", "neq", "ct", "nct", "sw", "ew", "gt", "gte", "lt", "lte", "bt", "in", "nin", "empty", "nempty",
)
# Each negative operator is ``not`` its positive one (so a null field satisfies every negative).
POSITIVE_OF: dict[str, str] = {"neq": "eq", "nct": "ct", "nin": "in", "nempty": "empty"}
MAX_DEPTH = 8
MAX_LIST = 10_000

_CUSTOM_NAME = re.compile(r"[A-Za-z0-9_-]+")
_TEXT_OPS = frozenset({"ct", "nct", "sw", "ew"})
_ORDER_OPS = frozenset({"gt", "gte", "lt", "lte"})
_CONDITION_KEYS = frozenset({"field", "operator", "value", "not"})
_GROUP_KEYS = frozenset({"or", "filters", "not"})
_INT_LIMIT = 2**63


@dataclass(frozen=True)
class Field:
    """A field a filter can name. ``kind`` is ``text``, ``int``, ``bool`` or ``datetime``.

    ``column`` is the Contact attribute holding it; ``custom`` the key in ``custom_fields``.
    """

    path: str
    kind: str
    column: str | None = None
    custom: str | None = None


@dataclass(frozen=True)
class Condition:
    """One checked condition.

    ``mode`` says how it compares: ``text`` (folded), ``number`` (doubles), ``date``
    (normalised text), ``int``, ``bool``, or ``none`` (empty/nempty). ``operand`` is the
    normalised value: a scalar, or a tuple for ``bt`` (low, high) and ``in``/``nin``.
    """

    field: Field
    operator: str
    mode: str
    operand: object
    negated: bool = False

    @property
    def positive(self) -> str:
        """The positive operator this one is, or negates (``nin`` -> ``in``)."""
        return POSITIVE_OF.get(self.operator, self.operator)

    @property
    def is_negative(self) -> bool:
        return self.operator in POSITIVE_OF


@dataclass(frozen=True)
class Group:
    """Conditions joined by OR (``any``) or AND; the whole group negated when ``negated``."""

    any: bool
    items: tuple[Condition | Group, ...]
    negated: bool = False


Node = Condition | Group

_SIMPLE_FIELDS: dict[str, Field] = {
    "contact.b2c": Field("contact.b2c", "bool", column="b2c"),
    "contact.status": Field("contact.status", "text", column="status"),
    "contact.team_id": Field("contact.team_id", "int", column="team_id"),
    "contact.user.id": Field("contact.user.id", "int", column="user_id"),
    "contact.account.name": Field("contact.account.name", "text", column="account_name"),
    "contact.created_at": Field("contact.created_at", "datetime", column="created_at"),
}
# A parsed ``filter``: the top-level AND group.
FilterTree = Group


def describe_fields() -> str:
    """The accepted field paths, for error messages and help."""
    return ", ".join(FIELD_PATHS) + " (fixed fields: " + ", ".join(sorted(FIXED_FIELD_NAMES)) + ")"


def parse_filters(raw: object) -> FilterTree:
    """Check a campaign's ``filter`` list and return its tree.

    Raises ValidationFailed naming every bad part by dotted path (``filter.1.filters.0.value``).
    """
    errors: dict[str, list[str]] = {}
    if not isinstance(raw, list):
        raise ValidationFailed({"filter": ["The filter must be an array of filters."]})
    items = _parse_items(raw, "filter", 1, errors)
    if errors:
        raise ValidationFailed(errors)
    return Group(any=False, items=items)


def _parse_items(raw: list, path: str, depth: int, errors: dict[str, list[str]]) -> tuple[Node, ...]:
    nodes = []
    for index, element in enumerate(raw):
        node = _parse_node(element, f"{path}.{index}", depth, errors)
        if node is not None:
            nodes.append(node)
    return tuple(nodes)


def _parse_node(raw: object, path: str, depth: int, errors: dict[str, list[str]]) -> Node | None:
    if not isinstance(raw, dict):
        _add(errors, path, f"The {path} must be a filter object or a group of filters.")
        return None
    negated = raw.get("not", False)
    if not isinstance(negated, bool):
        _add(errors, f"{path}.not", f"The {path}.not must be true or false.")
    if "filters" in raw or "or" in raw:
        return _parse_group(raw, path, depth, negated is True, errors)
    return _parse_condition(raw, path, negated is True, errors)


def _parse_group(raw: dict, path: str, depth: int, negated: bool, errors: dict[str, list[str]]) -> Group | None:
    _unknown_keys(raw, _GROUP_KEYS, path, errors)
    any_ = raw.get("or", False)
    if not isinstance(any_, bool):
        _add(errors, f"{path}.or", f"The {path}.or must be true or false.")
    filters = raw.get("filters")
    if not isinstance(filters, list) or not filters:
        _add(errors, f"{path}.filters", f"The {path}.filters must be a non-empty array of filters.")
        return None
    if depth >= MAX_DEPTH:
        _add(errors, f"{path}.filters", f"The {path}.filters nest too deep: groups nest at most {MAX_DEPTH} levels.")
        return None
    items = _parse_items(filters, f"{path}.filters", depth + 1, errors)
    return Group(any=any_ is True, items=items, negated=negated)


def _parse_condition(raw: dict, path: str, negated: bool, errors: dict[str, list[str]]) -> Condition | None:
    _unknown_keys(raw, _CONDITION_KEYS, path, errors)
    field = _parse_field(raw.get("field"), f"{path}.field", errors)
    operator = raw.get("operator")
    if operator is None:
        _add(errors, f"{path}.operator", f"The {path}.operator field is required.")
        return None
    if not isinstance(operator, str) or operator not in OPERATORS:
        _add(errors, f"{path}.operator", f"The {path}.operator must be one of: {', '.join(OPERATORS)}.")
        return None
    if field is None:
        return None
    if "value" not in raw and operator not in ("empty", "nempty"):
        _add(errors, f"{path}.value", f"The {path}.value field is required for {operator}.")
        return None
    checked = _operand(field, operator, raw.get("value"), path, errors)
    if checked is None:
        return None
    mode, operand = checked
    return Condition(field=field, operator=operator, mode=mode, operand=operand, negated=negated)


def _parse_field(raw: object, path: str, errors: dict[str, list[str]]) -> Field | None:
    if raw is None:
        _add(errors, path, f"The {path} field is required.")
        return None
    field = field_of(raw) if isinstance(raw, str) else None
    if field is None:
        _add(errors, path, f"The {path} is not a known field. Accepted: {describe_fields()}.")
    return field


def field_of(path: str) -> Field | None:
    """The Field a dotted path names, or None when it names none."""
    if path in _SIMPLE_FIELDS:
        return _SIMPLE_FIELDS[path]
    prefix, _, name = path.rpartition(".")
    if prefix == "contact.fixed_fields" and name in FIXED_FIELD_NAMES:
        return Field(path, "text", column=name)
    if prefix == "contact.custom_fields" and _CUSTOM_NAME.fullmatch(name):
        return Field(path, "text", custom=name)
    return None


def _operand(field: Field, op: str, value: object, path: str, errors: dict) -> tuple[str, object] | None:
    """Check ``value`` for ``op`` on ``field``; return (mode, normalised operand) or None."""
    vpath = f"{path}.value"
    if op in ("empty", "nempty"):
        if value is not None:
            return _add(errors, vpath, f"The {vpath} must be absent or null for {op}.")
        return "none", None
    if (field.kind == "bool" and op not in ("eq", "neq")) or (field.kind == "int" and op in _TEXT_OPS):
        return _add(errors, f"{path}.operator", f"The {path}.operator {op} cannot be used with {field.path}.")
    if op == "bt":
        if not isinstance(value, list) or len(value) != 2:
            return _add(errors, vpath, f"The {vpath} must be a list of two values [low, high].")
        bounds = [_scalar(field, op, v, f"{vpath}.{i}", errors) for i, v in enumerate(value)]
        return _same_kind(bounds, vpath, "The bounds of {path} must both be numbers, both dates or both text.", errors)
    if op in ("in", "nin"):
        if not isinstance(value, list) or not value or len(value) > MAX_LIST:
            return _add(errors, vpath, f"The {vpath} must be a non-empty list (at most {MAX_LIST} values).")
        items = [_scalar(field, op, v, f"{vpath}.{i}", errors) for i, v in enumerate(value)]
        checked = _same_kind(items, vpath, "The values of {path} must all be numbers or all be text.", errors)
        if checked is None:
            return None
        mode, operands = checked
        return mode, tuple(dict.fromkeys(operands))
    return _scalar(field, op, value, vpath, errors)


def _scalar(field: Field, op: str, value: object, vpath: str, errors: dict) -> tuple[str, object] | None:
    """Check one value (or one list item) of ``op`` on ``field``."""
    if field.kind == "bool":
        if not isinstance(value, bool):
            return _add(errors, vpath, f"The {vpath} must be true or false.")
        return "bool", value
    if field.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or not -_INT_LIMIT < value < _INT_LIMIT:
            return _add(errors, vpath, f"The {vpath} must be an integer.")
        return "int", value
    if is_number_value(value) and op not in _TEXT_OPS:
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            return _add(errors, vpath, f"The {vpath} must be a finite number.")
        return "number", number
    if not isinstance(value, str):
        kinds = "text" if op in _TEXT_OPS else "text or a number"
        return _add(errors, vpath, f"The {vpath} must be {kinds}.")
    if (op in _ORDER_OPS or op == "bt") and is_date_value(value):
        return "date", as_date(value)
    return "text", fold(value)


def _same_kind(checked: list, vpath: str, message: str, errors: dict) -> tuple[str, tuple] | None:
    if any(c is None for c in checked):
        return None
    modes = {mode for mode, _ in checked}
    if len(modes) != 1:
        return _add(errors, vpath, message.format(path=vpath))
    return modes.pop(), tuple(operand for _, operand in checked)


def _unknown_keys(raw: dict, allowed: frozenset[str], path: str, errors: dict) -> None:
    for key in raw:
        if key not in allowed:
            _add(errors, f"{path}.{key}", f"The {path}.{key} key is not allowed here ({', '.join(sorted(allowed))}).")


def _add(errors: dict[str, list[str]], path: str, reason: str) -> None:
    errors.setdefault(path, []).append(reason)
