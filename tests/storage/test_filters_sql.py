"""Hand examples of every operator: SQL on SQLite and PostgreSQL, and the Python evaluator, agree."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import Text, func, select
from sqlalchemy.dialects import postgresql

from storage.filter_eval import matches
from storage.filter_sql import compile_filters
from storage.filters import parse_filters
from storage.models import Contact


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


CONTACTS = {
    "c1": {
        "first_name": "Ørsted", "last_name": "Hansen", "email": "a.hansen@Example.com", "status": "active",
        "account_name": "Acme A/S", "team_id": 1, "user_id": 10, "b2c": True,
        "custom_fields": {"score": "12", "joined": "2024-01-15", "tag": "50%_off"},
        "created_at": at("2024-01-10 08:00:00"),
    },
    "c2": {
        "first_name": "erik", "last_name": "Jensen", "email": "", "status": "Lead", "account_name": None,
        "team_id": 2, "user_id": 11, "b2c": False,
        "custom_fields": {"score": "9.5", "joined": "2023-12-31 23:59:59", "tag": "5000"},
        "created_at": at("2024-02-01 00:00:00.500000"),
    },
    "c3": {
        "first_name": "", "last_name": "Ølstrup", "email": None, "status": None, "account_name": "Østergaard ApS",
        "team_id": None, "user_id": None, "b2c": None, "custom_fields": {"score": "abc", "tag": ""},
        "created_at": None,
    },
    "c4": {
        "first_name": "Émile", "last_name": "hansen", "email": "emile@mail.example", "status": "ACTIVE",
        "account_name": "acme a/s", "team_id": 3, "user_id": 10, "b2c": True, "custom_fields": None,
        "created_at": at("2023-06-30 12:00:00"),
    },
}


def f(field: str, operator: str, value=None, **extra) -> dict:
    return {"field": field, "operator": operator, "value": value, **extra}


FIX, CUS = "contact.fixed_fields.", "contact.custom_fields."
CASES = [
    # text, case-insensitive, Unicode
    ([f(FIX + "last_name", "eq", "HANSEN")], {"c1", "c4"}),
    ([f(FIX + "first_name", "eq", "ørsted")], {"c1"}),
    ([f(FIX + "last_name", "neq", "hansen")], {"c2", "c3"}),
    ([f("contact.status", "neq", "active")], {"c2", "c3"}),
    ([f(FIX + "email", "ct", "EXAMPLE")], {"c1", "c4"}),
    ([f(FIX + "email", "nct", "example")], {"c2", "c3"}),
    ([f(FIX + "email", "ct", "")], {"c1", "c2", "c4"}),
    # LIKE wildcards are literal
    ([f(CUS + "tag", "ct", "%")], {"c1"}),
    ([f(CUS + "tag", "ct", "0%")], {"c1"}),
    ([f(CUS + "tag", "ct", "_")], {"c1"}),
    ([f(CUS + "tag", "sw", "5_")], set()),
    ([f(FIX + "last_name", "sw", "Ø")], {"c3"}),
    ([f(FIX + "last_name", "ew", "SEN")], {"c1", "c2", "c4"}),
    ([f("contact.account.name", "ct", "A/S")], {"c1", "c4"}),
    # numbers
    ([f(CUS + "score", "gt", 10)], {"c1"}),
    ([f(CUS + "score", "lt", 10)], {"c2"}),
    ([f(CUS + "score", "gte", 12)], {"c1"}),
    ([f(CUS + "score", "lte", 9.5)], {"c2"}),
    ([f(CUS + "score", "bt", [9.5, 12])], {"c1", "c2"}),
    ([f(CUS + "score", "eq", 12)], {"c1"}),
    ([f(CUS + "score", "neq", 12)], {"c2", "c3", "c4"}),
    ([f(CUS + "score", "in", [9.5, 12.0])], {"c1", "c2"}),
    # a text bound compares as text, by code point
    ([f(CUS + "score", "gt", "5")], {"c2", "c3"}),
    ([f(FIX + "last_name", "bt", ["h", "J"])], {"c1", "c4"}),
    # dates
    ([f(CUS + "joined", "gt", "2024-01-01")], {"c1"}),
    ([f(CUS + "joined", "lte", "2023-12-31 23:59:59")], {"c2"}),
    ([f(CUS + "joined", "bt", ["2023-12-31", "2024-01-15"])], {"c1", "c2"}),
    ([f("contact.created_at", "gt", "2024-02-01")], set()),
    ([f("contact.created_at", "gte", "2024-02-01")], {"c2"}),
    ([f("contact.created_at", "lte", "2024-02-01")], {"c1", "c2", "c4"}),
    ([f("contact.created_at", "lt", "2024-02-01 00:00:00")], {"c1", "c4"}),
    ([f("contact.created_at", "bt", ["2024-01-10 08:00:00", "2024-02-01"])], {"c1", "c2"}),
    ([f("contact.created_at", "lte", "9999-12-31 23:59:59")], {"c1", "c2", "c4"}),
    ([f("contact.created_at", "sw", "2024-01")], {"c1"}),
    ([f("contact.created_at", "eq", "2024-01-10 08:00:00")], {"c1"}),
    ([f("contact.created_at", "gt", 5)], set()),
    ([f("contact.created_at", "empty")], {"c3"}),
    # integers and booleans
    ([f("contact.team_id", "eq", 1)], {"c1"}),
    ([f("contact.team_id", "neq", 1)], {"c2", "c3", "c4"}),
    ([f("contact.team_id", "in", [1, 3])], {"c1", "c4"}),
    ([f("contact.team_id", "nin", [1, 3])], {"c2", "c3"}),
    ([f("contact.team_id", "gt", 1)], {"c2", "c4"}),
    ([f("contact.team_id", "bt", [2, 3])], {"c2", "c4"}),
    ([f("contact.user.id", "eq", 10)], {"c1", "c4"}),
    ([f("contact.user.id", "lte", 10)], {"c1", "c4"}),
    ([f("contact.b2c", "eq", True)], {"c1", "c4"}),
    ([f("contact.b2c", "neq", True)], {"c2", "c3"}),
    ([f("contact.b2c", "empty")], {"c3"}),
    ([f("contact.b2c", "nempty")], {"c1", "c2", "c4"}),
    # empty / nempty: null or ''
    ([f(FIX + "first_name", "empty")], {"c3"}),
    ([f(FIX + "email", "empty")], {"c2", "c3"}),
    ([f(FIX + "email", "nempty")], {"c1", "c4"}),
    ([f(CUS + "tag", "empty")], {"c3", "c4"}),
    ([f(CUS + "missing", "nempty")], set()),
    ([f("contact.status", "in", ["ACTIVE", "lead"])], {"c1", "c2", "c4"}),
    ([f("contact.status", "nin", ["active", "lead"])], {"c3"}),
    # not, groups
    ([f(FIX + "last_name", "eq", "hansen", **{"not": True})], {"c2", "c3"}),
    ([f(CUS + "score", "gt", 10, **{"not": True})], {"c2", "c3", "c4"}),
    ([{"or": True, "filters": [f("contact.team_id", "eq", 1), f("contact.status", "eq", "lead")]}], {"c1", "c2"}),
    ([{"or": True, "not": True, "filters": [f("contact.team_id", "eq", 1), f("contact.status", "eq", "lead")]}],
     {"c3", "c4"}),
    ([f("contact.b2c", "eq", True),
      {"or": True, "filters": [f("contact.team_id", "eq", 3), {"or": False, "filters": [
          f(FIX + "first_name", "sw", "ø"), f(CUS + "score", "gte", 1)]}]}], {"c1", "c4"}),
    ([{"or": False, "not": True, "filters": [f("contact.b2c", "eq", True), f("contact.team_id", "eq", 1)]}],
     {"c2", "c3", "c4"}),
    ([], {"c1", "c2", "c3", "c4"}),
]


@pytest.fixture
def loaded(sessions):
    with sessions.begin() as session:
        session.add_all(Contact(id=key, **values) for key, values in CONTACTS.items())
    return sessions


def test_sql_and_python_select_the_expected_contacts(loaded):
    # All cases in one test per database: the data is loaded once, and a failure lists every miss.
    misses = []
    with loaded() as session:
        dialect = session.get_bind().dialect.name
        contacts = list(session.scalars(select(Contact)))
        for raw, expected in CASES:
            tree = parse_filters(raw)
            selected = set(session.scalars(select(Contact.id).where(compile_filters(tree, dialect))))
            evaluated = {c.id for c in contacts if matches(tree, c)}
            if selected != expected or evaluated != expected:
                misses.append({"filter": raw, "expected": expected, "sql": selected, "python": evaluated})
    assert misses == []


def test_a_compiled_filter_is_reusable_in_a_set_based_insert_select(loaded):
    tree = parse_filters([f("contact.team_id", "in", [1, 2, 3]), f(FIX + "email", "nempty")])
    with loaded() as session:
        where = compile_filters(tree, session.get_bind().dialect.name)
        assert session.scalar(select(Contact.id).where(where).order_by(Contact.id)) == "c1"
        assert sorted(session.scalars(select(Contact.id).where(where))) == ["c1", "c4"]


TRICKY_TEXTS = [
    "12", "-0", "01", "1.5", "-2.25", "1.", ".5", "1e3", " 1", "1 ", "+1", "1,5", "٣", "1" * 200, "1" * 201,
    "0." + "0" * 197 + "1", "12\n", "2024-01-01", "2024-01-01 10:00:00", "2024-13-45", "2024-1-1",
    "2024-01-01T10:00:00", "2024-01-01 10:00", "2024-01-01\n", "", "abc", "ØSTER", "É%_\\",
    "ΟΔΟΣ", "İstanbul", "ǅ", "ẞ", "Ω",
]


def test_number_date_and_case_readings_match_coerce(engine):
    # The primitives every filter is built from read each text as storage.coerce does.
    from sqlalchemy import literal

    from storage.coerce import as_date, as_number, fold
    from storage.filter_sql import _date, _number

    dialect = engine.dialect.name
    with engine.connect() as conn:
        for text in TRICKY_TEXTS:
            value = literal(text, Text)
            row = conn.execute(select(_number(value, dialect), _date(value, dialect), func.lower(value))).one()
            assert tuple(row) == (as_number(text), as_date(text), fold(text)), text


def _pg_sql(raw) -> str:
    where = compile_filters(parse_filters(raw), "postgresql")
    return str(select(Contact.id).where(where).compile(dialect=postgresql.dialect()))


def test_integer_and_created_at_conditions_stay_plain_column_comparisons():
    # So PostgreSQL can use ix_contacts_team_id / ix_contacts_created_at for a million contacts.
    assert "WHERE contacts.team_id = " in _pg_sql([f("contact.team_id", "eq", 1)])
    assert "WHERE contacts.user_id IN " in _pg_sql([f("contact.user.id", "in", [1, 2])])
    sql = _pg_sql([f("contact.created_at", "bt", ["2024-01-01", "2024-02-01"])])
    assert "WHERE contacts.created_at >= " in sql and "to_char" not in sql


def test_unknown_dialect_is_refused():
    with pytest.raises(ValueError):
        compile_filters(parse_filters([]), "mysql")
