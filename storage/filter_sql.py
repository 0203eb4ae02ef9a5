"""Compile a parsed filter to one SQLAlchemy boolean over ``Contact`` columns.

The expression answers exactly as ``storage.filter_eval.matches`` does, on PostgreSQL and on
SQLite. SQL's NULL plays the part of "no value": a positive condition on a null field is NULL
(never true), and every negation is ``NOT COALESCE(x, FALSE)``, so NULL counts as false
wherever it is negated, as it does in Python.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Double, Text, and_, case, cast, false, func, not_, or_, true

from storage.coerce import DATE_PG, NUMBER_MAX_LEN, NUMBER_PG
from storage.filters import Condition, FilterTree, Group, Node
from storage.models import Contact
from storage.timefmt import FORMAT

_ONE_SECOND = timedelta(seconds=1)


def compile_filters(tree: FilterTree, dialect_name: str) -> ColumnElement[bool]:
    """The WHERE clause selecting the contacts ``tree`` matches (``postgresql`` or ``sqlite``)."""
    if dialect_name not in ("postgresql", "sqlite"):
        raise ValueError(f"unsupported dialect: {dialect_name}")
    return _group(tree, dialect_name)


def _node(node: Node, dialect: str) -> ColumnElement[bool]:
    expr = _group(node, dialect) if isinstance(node, Group) else _condition(node, dialect)
    return _not(expr) if node.negated else expr


def _group(group: Group, dialect: str) -> ColumnElement[bool]:
    parts = [_node(item, dialect) for item in group.items]
    if not parts:
        return false() if group.any else true()
    if len(parts) == 1:
        return parts[0]
    return or_(*parts) if group.any else and_(*parts)


def _not(expr: ColumnElement[bool]) -> ColumnElement[bool]:
    return not_(func.coalesce(expr, false()))


def _condition(cond: Condition, dialect: str) -> ColumnElement[bool]:
    expr = _positive(cond, dialect)
    return _not(expr) if cond.is_negative else expr


def _positive(cond: Condition, dialect: str) -> ColumnElement[bool]:
    field, op, operand = cond.field, cond.positive, cond.operand
    if field.kind in ("int", "bool"):
        column = getattr(Contact, field.column)
        if op == "empty":
            return column.is_(None)
        return _compare(column, op, operand)
    if op == "empty":
        if field.kind == "datetime":
            return Contact.created_at.is_(None)
        text = _text(cond, dialect)
        return or_(text.is_(None), text == "")
    if cond.mode == "number":
        return _compare(_number(_text(cond, dialect), dialect), op, operand)
    if cond.mode == "date":
        if field.kind == "datetime" and dialect == "postgresql":
            return _created_at(op, operand)
        return _compare(_date(_text(cond, dialect), dialect), op, operand)
    folded = func.lower(_text(cond, dialect), type_=Text)
    if op == "ct":
        return folded.contains(operand, autoescape=True)
    if op == "sw":
        return folded.startswith(operand, autoescape=True)
    if op == "ew":
        return folded.endswith(operand, autoescape=True)
    if op in ("gt", "gte", "lt", "lte", "bt") and dialect == "postgresql":
        # Order by code point, as Python and SQLite (BINARY) do, whatever the database collation.
        folded = folded.collate("C")
    return _compare(folded, op, operand)


def _compare(expr: ColumnElement, op: str, operand: object) -> ColumnElement[bool]:
    if op == "eq":
        return expr == operand
    if op == "gt":
        return expr > operand
    if op == "gte":
        return expr >= operand
    if op == "lt":
        return expr < operand
    if op == "lte":
        return expr <= operand
    if op == "bt":
        low, high = operand
        return and_(expr >= low, expr <= high)
    if op == "in":
        return expr.in_(list(operand))
    raise ValueError(f"operator {op} does not apply here")


def _text(cond: Condition, dialect: str) -> ColumnElement:
    """The field as text, the form the contract compares it in."""
    field = cond.field
    if field.custom is not None:
        # ->> on PostgreSQL, json_extract on SQLite: the stored text, NULL when the key is missing.
        return Contact.custom_fields[field.custom].as_string()
    if field.kind == "datetime":
        if dialect == "postgresql":
            return func.to_char(func.timezone("UTC", Contact.created_at), "YYYY-MM-DD HH24:MI:SS", type_=Text)
        # SQLite stores 'Y-m-d H:i:s.ffffff' (UTC); the contract's form drops the fraction.
        return func.substr(Contact.created_at, 1, 19, type_=Text)
    return getattr(Contact, field.column)


def _number(text: ColumnElement, dialect: str) -> ColumnElement:
    """``coerce.as_number`` in SQL: the double a number-shaped text holds, else NULL."""
    if dialect == "sqlite":
        return func.cd_number(text, type_=Double)
    shaped = and_(text.regexp_match(NUMBER_PG), func.length(text) <= NUMBER_MAX_LEN)
    return case((shaped, cast(text, Double)), else_=None)


def _date(text: ColumnElement, dialect: str) -> ColumnElement:
    """``coerce.as_date`` in SQL: a date-shaped text as ``Y-m-d H:i:s``, else NULL."""
    if dialect == "sqlite":
        return func.cd_date(text, type_=Text)
    full = case((func.length(text) == 10, text.concat(" 00:00:00")), else_=text)
    return case((text.regexp_match(DATE_PG), full), else_=None).collate("C")


def _created_at(op: str, operand: object) -> ColumnElement[bool]:
    """Date comparisons on the timestamp column itself, so its index serves them.

    The contract compares ``created_at`` as whole-second text; for a whole-second bound D,
    ``text > D`` is ``created_at >= D + 1s`` and ``text <= D`` is ``created_at < D + 1s``.
    """
    column = Contact.created_at
    if op == "bt":
        low, high = operand
        return and_(_created_at("gte", low), _created_at("lte", high))
    moment = datetime.strptime(operand, FORMAT).replace(tzinfo=UTC)
    if op == "gte":
        return column >= moment
    if op == "lt":
        return column < moment
    try:
        after = moment + _ONE_SECOND
    except OverflowError:  # the last second of year 9999: nothing is after it
        return false() if op == "gt" else column.is_not(None)
    return column >= after if op == "gt" else column < after
