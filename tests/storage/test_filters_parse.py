"""Parsing and validating campaign filters: what is accepted, and bad input named by dotted path."""

import pytest

from storage.errors import ValidationFailed
from storage.filters import FIELD_PATHS, Condition, Group, describe_fields, parse_filters


def cond(field="contact.fixed_fields.last_name", operator="eq", value="x", **extra):
    return {"field": field, "operator": operator, "value": value, **extra}


def errors_of(raw) -> dict[str, list[str]]:
    with pytest.raises(ValidationFailed) as caught:
        parse_filters(raw)
    return caught.value.errors


INVALID = [
    # (filter, the one dotted path that must be named)
    ({"field": "contact.b2c"}, "filter"),
    ("contact.b2c", "filter"),
    ([42], "filter.0"),
    ([{"operator": "eq", "value": "x"}], "filter.0.field"),
    ([cond(field="contact.nickname")], "filter.0.field"),
    ([cond(field="contact.fixed_fields.shoe_size")], "filter.0.field"),
    ([cond(field="contact.custom_fields.bad name")], "filter.0.field"),
    ([cond(field=7)], "filter.0.field"),
    ([cond(), {"field": "contact.status", "value": "x"}], "filter.1.operator"),
    ([cond(), cond(), cond(operator="like")], "filter.2.operator"),
    ([cond(operator="EQ")], "filter.0.operator"),
    ([cond(extra_key=1)], "filter.0.extra_key"),
    ([cond(**{"not": "yes"})], "filter.0.not"),
    ([cond(field="contact.b2c", operator="ct", value="x")], "filter.0.operator"),
    ([cond(field="contact.b2c", operator="eq", value="true")], "filter.0.value"),
    ([cond(field="contact.b2c", operator="in", value=[True])], "filter.0.operator"),
    ([cond(field="contact.team_id", operator="eq", value="3")], "filter.0.value"),
    ([cond(field="contact.team_id", operator="eq", value=3.5)], "filter.0.value"),
    ([cond(field="contact.user.id", operator="ct", value="3")], "filter.0.operator"),
    ([cond(field="contact.user.id", operator="eq", value=2**64)], "filter.0.value"),
    ([cond(operator="eq", value=True)], "filter.0.value"),
    ([cond(operator="eq", value=None)], "filter.0.value"),
    ([{"field": "contact.status", "operator": "sw"}], "filter.0.value"),
    ([cond(operator="ct", value=5)], "filter.0.value"),
    ([cond(operator="gt", value=["a"])], "filter.0.value"),
    ([cond(operator="eq", value=float("nan"))], "filter.0.value"),
    ([cond(operator="eq", value=10**400)], "filter.0.value"),
    ([cond(operator="bt", value=[1])], "filter.0.value"),
    ([cond(operator="bt", value="1,2")], "filter.0.value"),
    ([cond(operator="bt", value=[1, "2024-01-01"])], "filter.0.value"),
    ([cond(operator="bt", value=["2024-01-01", "b"])], "filter.0.value"),
    ([cond(operator="bt", value=[1, None])], "filter.0.value.1"),
    ([cond(operator="in", value=[])], "filter.0.value"),
    ([cond(operator="nin", value="a")], "filter.0.value"),
    ([cond(operator="in", value=["a", 1])], "filter.0.value"),
    ([cond(operator="in", value=["a", {"b": 1}])], "filter.0.value.1"),
    ([cond(field="contact.team_id", operator="in", value=[1, "2"])], "filter.0.value.1"),
    ([cond(operator="empty", value="x")], "filter.0.value"),
    ([{"or": True, "filters": []}], "filter.0.filters"),
    ([{"or": True}], "filter.0.filters"),
    ([{"or": "yes", "filters": [cond()]}], "filter.0.or"),
    ([{"or": True, "filters": [cond()], "field": "contact.status"}], "filter.0.field"),
    ([cond(), {"or": True, "filters": [cond(), cond(operator="gt", value=None)]}], "filter.1.filters.1.value"),
    ([{"filters": [{"or": False, "filters": [cond(field="contact.x")]}]}], "filter.0.filters.0.filters.0.field"),
]


@pytest.mark.parametrize(("raw", "path"), INVALID, ids=[f"{i}-{p}" for i, (_, p) in enumerate(INVALID)])
def test_invalid_filter_names_its_path(raw, path):
    errors = errors_of(raw)
    assert list(errors) == [path]
    assert all(path in reason for reason in errors[path])


def test_every_bad_part_is_reported_at_once():
    errors = errors_of([cond(field="contact.x"), cond(operator="nope"), {"or": 1, "filters": [cond(value=[])]}])
    assert set(errors) == {"filter.0.field", "filter.1.operator", "filter.2.or", "filter.2.filters.0.value"}


def test_unknown_field_message_lists_accepted_fields():
    (reason,) = errors_of([cond(field="contact.nickname")])["filter.0.field"]
    assert "contact.custom_fields.<name>" in reason and "last_name" in reason
    assert all(path in describe_fields() for path in FIELD_PATHS)


def test_nesting_is_bounded():
    raw = [cond()]
    for _ in range(20):
        raw = [{"or": True, "filters": raw}]
    errors = errors_of(raw)
    assert len(errors) == 1 and next(iter(errors)).endswith(".filters")


def test_empty_filter_is_an_empty_conjunction():
    assert parse_filters([]) == Group(any=False, items=())


def test_values_are_normalised_once():
    tree = parse_filters([
        cond(operator="eq", value="ØsterGAARD"),
        cond(operator="gte", value="2024-03-01"),
        cond(operator="lt", value=7),
        cond(operator="bt", value=["B", "d"]),
        cond(operator="nin", value=["A", "a", "b"]),
        cond(field="contact.b2c", operator="neq", value=False, **{"not": True}),
        cond(field="contact.status", operator="nempty", value=None),
        {"field": "contact.account.name", "operator": "empty"},
    ])
    modes = [(c.mode, c.operand, c.negated) for c in tree.items]
    assert modes == [
        ("text", "østergaard", False),
        ("date", "2024-03-01 00:00:00", False),
        ("number", 7.0, False),
        ("text", ("b", "d"), False),
        ("text", ("a", "b"), False),
        ("bool", False, True),
        ("none", None, False),
        ("none", None, False),
    ]
    assert all(isinstance(c, Condition) for c in tree.items)


def test_not_a_calendar_date_compares_as_text():
    (item,) = parse_filters([cond(operator="gt", value="2024-02-30")]).items
    assert item.mode == "text"


def test_groups_nest_and_keep_their_flags():
    tree = parse_filters([{"or": True, "not": True, "filters": [cond(), {"filters": [cond(operator="ct")]}]}])
    (group,) = tree.items
    assert group.any and group.negated
    inner = group.items[1]
    assert isinstance(inner, Group) and not inner.any and not inner.negated


def test_seed_example_parses():
    tree = parse_filters([{"field": "contact.fixed_fields.last_name", "operator": "ct", "value": "e"}])
    (item,) = tree.items
    assert (item.field.column, item.operator, item.operand) == ("last_name", "ct", "e")


def test_custom_field_names_allow_dash_and_underscore():
    (item,) = parse_filters([cond(field="contact.custom_fields.Shoe_size-EU")]).items
    assert item.field.custom == "Shoe_size-EU"
