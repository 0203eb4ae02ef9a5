"""Evaluate a parsed filter against one loaded Contact, in Python.

The delivery actor re-checks a recipient with this; it must answer exactly as the SQL from
``storage.filter_sql`` does, which a property test holds it to.
"""

from __future__ import annotations

import json

from storage.coerce import as_date, as_number, fold, scalar_text
from storage.filters import Condition, Field, FilterTree, Group, Node
from storage.models import ContactLike
from storage.timefmt import fmt


def matches(tree: FilterTree, contact: ContactLike) -> bool:
    """True when ``contact`` satisfies the filter."""
    return _group(tree, contact)


def _node(node: Node, contact: ContactLike) -> bool:
    result = _group(node, contact) if isinstance(node, Group) else _condition(node, contact)
    return not result if node.negated else result


def _group(group: Group, contact: ContactLike) -> bool:
    results = (_node(item, contact) for item in group.items)
    return any(results) if group.any else all(results)


def _condition(cond: Condition, contact: ContactLike) -> bool:
    result = _positive(cond, contact)
    return not result if cond.is_negative else result


def _positive(cond: Condition, contact: ContactLike) -> bool:
    value = field_value(cond.field, contact)
    op = cond.positive
    if op == "empty":
        return value is None or value == ""
    if value is None:
        return False
    if cond.mode == "number":
        value = as_number(value)
    elif cond.mode == "date":
        value = as_date(value)
    elif cond.mode == "text":
        value = fold(value)
    if value is None:
        return False
    return _compare(value, op, cond.operand)


def _compare(value, op: str, operand) -> bool:
    if op == "eq":
        return value == operand
    if op == "ct":
        return operand in value
    if op == "sw":
        return value.startswith(operand)
    if op == "ew":
        return value.endswith(operand)
    if op == "gt":
        return value > operand
    if op == "gte":
        return value >= operand
    if op == "lt":
        return value < operand
    if op == "lte":
        return value <= operand
    if op == "bt":
        low, high = operand
        return low <= value <= high
    if op == "in":
        return value in operand
    raise ValueError(f"operator {op} does not apply here")


def field_value(field: Field, contact: ContactLike) -> object:
    """The value a filter sees: text for text and date fields, else the int or bool (None if unset)."""
    if field.custom is not None:
        custom = contact.custom_fields
        value = custom.get(field.custom) if isinstance(custom, dict) else None
        if isinstance(value, (dict, list)):
            return json.dumps(value)
        return scalar_text(value)
    value = getattr(contact, field.column)
    if field.kind == "datetime":
        return fmt(value)
    return value
