"""Property: for any contacts and any valid filter, the SQL selects exactly the contacts
``matches`` accepts, on SQLite and on PostgreSQL."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from storage.filter_eval import matches
from storage.filter_sql import compile_filters
from storage.filters import parse_filters
from storage.models import Contact

ALPHABET = "abcXYZeEoO019 %_\\-:øØéÉë"
TRICKY = [
    "", " ", "a", "A", "ø", "Ø", "é", "É", "ë", "%", "_", "\\", "a%b", "a_b", "A\\b", "-", ":", "øl", "ØL", "Ea",
    "ΟΣ", "İ",
]
NUMBER_TEXTS = ["0", "-0", "1", "01", "1.5", "-2.25", "10", "9.50", "0.1", "1e3", " 1", "1.", ".5", "-", "100"]
DAYS = st.dates(min_value=date(2023, 12, 30), max_value=date(2024, 1, 2))
TIMES = st.sampled_from([time(0, 0, 0), time(12, 30, 0), time(23, 59, 59)])


def _date_text(day: date, with_time: bool, moment: time) -> str:
    return day.isoformat() + (" " + moment.isoformat() if with_time else "")


DATE_TEXTS = st.one_of(
    st.builds(_date_text, DAYS, st.booleans(), TIMES),
    st.sampled_from(["2024-13-45", "2024-02-30", "2024-1-1", "2024-01-01T00:00:00", "2024-01-01 7:00:00"]),
)
CALENDAR_DATES = st.builds(_date_text, DAYS, st.booleans(), TIMES)
TEXTS = st.one_of(
    st.text(alphabet=ALPHABET, max_size=5), st.sampled_from(TRICKY),
    st.sampled_from(NUMBER_TEXTS), st.integers(-20, 20).map(str), DATE_TEXTS,
)
# Flat, so that a null is one kind among six rather than half of all values.
FIELD_TEXTS = st.one_of(
    st.none(), st.text(alphabet=ALPHABET, max_size=5), st.sampled_from(TRICKY),
    st.sampled_from(NUMBER_TEXTS), st.integers(-20, 20).map(str), DATE_TEXTS,
)
NUMBERS = st.one_of(
    st.integers(-20, 20), st.sampled_from([0.1, 1.5, -2.25, 9.5, 1000.0, 0.0]),
    st.floats(min_value=-30, max_value=30, allow_nan=False, allow_infinity=False),
)
SMALL_INTS = st.integers(-1, 4)


@st.composite
def created_ats(draw):
    moment = datetime.combine(draw(DAYS), draw(TIMES)) + timedelta(microseconds=draw(st.sampled_from([0, 500_000])))
    return moment.replace(tzinfo=UTC)


CONTACT = st.fixed_dictionaries({
    "first_name": FIELD_TEXTS,
    "last_name": FIELD_TEXTS,
    "city": FIELD_TEXTS,
    "status": FIELD_TEXTS,
    "account_name": FIELD_TEXTS,
    "team_id": st.one_of(st.none(), SMALL_INTS),
    "user_id": st.one_of(st.none(), SMALL_INTS),
    "b2c": st.one_of(st.none(), st.booleans()),
    "custom_fields": st.one_of(st.none(), st.dictionaries(st.sampled_from(["a", "b-c", "x_y"]), FIELD_TEXTS)),
    "created_at": st.one_of(st.none(), created_ats()),
})

TEXT_FIELDS = [
    "contact.fixed_fields.first_name", "contact.fixed_fields.last_name", "contact.fixed_fields.city",
    "contact.custom_fields.a", "contact.custom_fields.b-c", "contact.custom_fields.x_y",
    "contact.custom_fields.missing", "contact.status", "contact.account.name", "contact.created_at",
]


@dataclass(frozen=True)
class Near:
    """Stands for a text some contact holds, cut and re-cased; resolved once the contacts exist,
    so that equality and containment hit often while every strategy stays static (and fast)."""

    index: int
    start: int
    end: int
    case: str

    def resolve(self, seen: list[str]) -> str:
        text = seen[self.index % len(seen)] if seen else ""
        text = text[self.start:] if self.end == 0 else text[self.start:self.start + self.end]
        return {"same": text, "upper": text.upper(), "lower": text.lower(), "swap": text.swapcase()}[self.case]


NEAR = st.builds(Near, st.integers(0, 50), st.integers(0, 4), st.integers(0, 6),
                 st.sampled_from(["same", "upper", "lower", "swap"]))
VALUE_TEXTS = st.one_of(TEXTS, NEAR)
VALUE_STRINGS = st.one_of(VALUE_TEXTS, CALENDAR_DATES)
NON_DATE_TEXTS = st.one_of(st.text(alphabet=ALPHABET, max_size=5), st.sampled_from(TRICKY + NUMBER_TEXTS))


def _values(field: str, op: str):
    """A strategy of valid values for ``op`` on ``field``."""
    if op in ("empty", "nempty"):
        return st.none()
    if field == "contact.b2c":
        return st.booleans()
    if field in ("contact.team_id", "contact.user.id"):
        if op == "bt":
            return st.lists(SMALL_INTS, min_size=2, max_size=2)
        return st.lists(SMALL_INTS, min_size=1, max_size=3) if op in ("in", "nin") else SMALL_INTS
    if op in ("ct", "nct", "sw", "ew"):
        return VALUE_TEXTS
    if op == "bt":
        kinds = (NUMBERS, CALENDAR_DATES, NON_DATE_TEXTS)
        return st.one_of(*(st.lists(kind, min_size=2, max_size=2) for kind in kinds))
    if op in ("in", "nin"):
        return st.one_of(st.lists(NUMBERS, min_size=1, max_size=4), st.lists(VALUE_STRINGS, min_size=1, max_size=4))
    return st.one_of(NUMBERS, VALUE_STRINGS)


ALL_OPS = ["eq", "neq", "ct", "nct", "sw", "ew", "gt", "gte", "lt", "lte", "bt", "in", "nin", "empty", "nempty"]
FIELD_OPS = (
    [(field, op) for field in TEXT_FIELDS for op in ALL_OPS]
    + [(field, op) for field in ("contact.team_id", "contact.user.id")
       for op in ALL_OPS if op not in ("ct", "nct", "sw", "ew")]
    + [("contact.b2c", op) for op in ("eq", "neq", "empty", "nempty")]
)
VALUES = {field_op: _values(*field_op) for field_op in FIELD_OPS}


@st.composite
def conditions(draw):
    field, op = draw(st.sampled_from(FIELD_OPS))
    condition = {"field": field, "operator": op}
    if op not in ("empty", "nempty") or draw(st.booleans()):
        condition["value"] = draw(VALUES[(field, op)])
    if draw(st.booleans()):
        condition["not"] = draw(st.booleans())
    return condition


def _group(children):
    return st.fixed_dictionaries(
        {"or": st.booleans(), "filters": st.lists(children, min_size=1, max_size=3)},
        optional={"not": st.booleans()},
    )


# Valid filter lists: conditions on every field and operator, nested groups, ``not``.
FILTERS = st.lists(st.recursive(conditions(), _group, max_leaves=6), min_size=1, max_size=3)


def _texts_of(contacts: list[dict]) -> list[str]:
    texts = {value for contact in contacts for value in contact.values() if isinstance(value, str)}
    texts |= {value for contact in contacts for value in (contact["custom_fields"] or {}).values() if value}
    texts |= {contact["created_at"].strftime("%Y-%m-%d %H:%M:%S") for contact in contacts if contact["created_at"]}
    return sorted(texts)


def _resolve(raw, seen: list[str]):
    if isinstance(raw, Near):
        return raw.resolve(seen)
    if isinstance(raw, list):
        return [_resolve(item, seen) for item in raw]
    if isinstance(raw, dict):
        return {key: _resolve(value, seen) for key, value in raw.items()}
    return raw


@settings(
    max_examples=150, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(contacts=st.lists(CONTACT, min_size=4, max_size=12), filter_lists=st.lists(FILTERS, min_size=4, max_size=8))
def test_sql_selects_exactly_what_python_matches(sessions, contacts, filter_lists):
    raws = _resolve(filter_lists, _texts_of(contacts))
    # The db fixtures are per test, not per example: each example removes its own contacts.
    try:
        with sessions.begin() as session:
            session.add_all(Contact(id=f"k{i}", **values) for i, values in enumerate(contacts))
        with sessions() as session:
            dialect = session.get_bind().dialect.name
            loaded = list(session.scalars(select(Contact)))
            for raw in raws:
                tree = parse_filters(raw)
                selected = set(session.scalars(select(Contact.id).where(compile_filters(tree, dialect))))
                evaluated = {contact.id for contact in loaded if matches(tree, contact)}
                note(f"filter={raw!r} sql={sorted(selected)} python={sorted(evaluated)}")
                assert selected == evaluated
    finally:
        with sessions.begin() as session:
            session.execute(delete(Contact))
