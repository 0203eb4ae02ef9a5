"""A seed recipient object <-> a contacts row: what is stored, what comes back, what is refused."""

from __future__ import annotations

import copy
import json
from functools import partial
from datetime import datetime, timezone
from pathlib import Path

import pytest

from renderers.context import Record, build_context, contact_record
from storage.contacts import (
    FIXED_NAMES, contact_row, contact_to_seed, contacts_by_id, read_contact, template_field,
)
from storage.errors import ValidationFailed
from storage.fields import FIXED_FIELD_NAMES, FIXED_FIELDS
from storage.loader import load_bundle
from storage.models import Contact, Team, User
from storage.serialize import user_to_seed

BUNDLE = Path(__file__).parent.parent / "data" / "bundle.json"
NO_CONSENT = {ch: {"consent_given": None, "updated_at": ""} for ch in ("email", "letter", "call", "sms")}


@pytest.fixture
def bundle() -> dict:
    return json.loads(BUNDLE.read_text(encoding="utf-8"))


def _contact(bundle: dict, index: int = 0) -> dict:
    return copy.deepcopy(bundle["contacts"][index])


def _set_fixed(obj: dict, name: str, value) -> dict:
    for item in obj["fixed_fields"]:
        if item["name"] == name:
            item["value"] = value
    return obj


def test_round_trip_gives_back_the_seed_shape(sessions, bundle):
    load_bundle(sessions, bundle)
    with sessions() as session:
        for original in bundle["contacts"]:
            contact = session.get(Contact, original["id"])
            user = session.get(User, contact.user_id) if contact.user_id else None
            expected = dict(original, consent=original["consent"] or NO_CONSENT)
            assert contact_to_seed(contact, user) == expected


def test_templates_read_the_same_values_from_the_lean_contact_as_from_the_seed_shape(sessions, bundle):
    def rendered(contact: dict | Record) -> str:
        if isinstance(contact, Record):  # made by delivery: each value read when first asked for
            record = contact
        else:
            context = build_context(contact, {"id": "c", "name": "n"}, None, None, fixed_field_names=FIXED_FIELD_NAMES)
            record = context["contact"]
        assert set(record) == {*FIXED_FIELD_NAMES, "id", "b2c", "team_id", "status", "created_at", "updated_at",
                               "fixed_fields", "custom_fields", "account", "user"}
        assert set(record["fixed_fields"]) == FIXED_FIELD_NAMES and len(record["fixed_fields"]) == len(FIXED_FIELDS)
        # every name a template can reach on a contact, as it would print
        names = [*FIXED_FIELD_NAMES, "id", "b2c", "team_id", "status", "created_at", "updated_at"]
        values = [str(record[name]) for name in sorted(names)]
        values += [str(record["account"][k]) for k in ("id", "name")]
        values += [str(record["user"][k]) for k in record["user"]]
        values += [f"{k}={record['custom_fields'][k]}" for k in sorted(record["custom_fields"])]
        values += [str(record["fixed_fields"][name]) for name in sorted(FIXED_FIELD_NAMES)]
        return "|".join(values)

    load_bundle(sessions, bundle)
    with sessions() as session:
        contacts = session.query(Contact).all()
        assert any(c.user_id for c in contacts) and any(c.account_name for c in contacts)
        for contact in contacts:
            user = session.get(User, contact.user_id) if contact.user_id else None
            seed = rendered(contact_to_seed(contact, user))
            row = contacts_by_id(session, [contact.id])[contact.id]
            for source in (contact, row):
                lazy = contact_record(partial(getattr, source), partial(template_field, source, user_to_seed(user)),
                                      FIXED_NAMES)
                assert rendered(lazy) == seed


def test_contacts_loaded_for_delivery_read_as_the_stored_contacts_do(sessions, bundle):
    """A worker loads each batch's contacts as table rows (contacts_by_id), not ORM objects: every
    column reads the same, and filters, consent re-checks and templates see the same contact."""
    from storage.contacts import contacts_by_id
    from storage.filter_eval import matches
    from storage.filters import parse_filters
    from storage.ledger import skip_reason_of

    load_bundle(sessions, bundle)
    filters = [  # a fixed field, a custom field, a date and the consent that re-checks read
        parse_filters([{"field": "contact.fixed_fields.first_name", "operator": "ct", "value": "ë"}]),
        parse_filters([{"field": "contact.custom_fields.tier", "operator": "eq", "value": "gold"}]),
        parse_filters([{"field": "contact.created_at", "operator": "gt", "value": "2025-01-01 00:00:00"}]),
        parse_filters([{"field": "contact.fixed_fields.city", "operator": "nempty"}]),
    ]
    ids = [c["id"] for c in bundle["contacts"]]
    with sessions() as session:
        rows = contacts_by_id(session, [*ids, "00000000-0000-0000-0000-0000000000ff"])  # one that does not exist
        assert sorted(rows) == sorted(ids)
        for contact in session.query(Contact):
            row = rows[contact.id]
            for column in Contact.__table__.columns:
                assert getattr(row, column.name) == getattr(contact, column.name), column.name
            assert [matches(tree, row) for tree in filters] == [matches(tree, contact) for tree in filters]
            assert [skip_reason_of(kind, row) for kind in ("email", "letter", "telephone")] == \
                [skip_reason_of(kind, contact) for kind in ("email", "letter", "telephone")]
            user = user_to_seed(session.get(User, contact.user_id)) if contact.user_id else None
            read = ("id", "b2c", "account", "user", "team_id", "status", "custom_fields", "created_at", "updated_at")
            assert [template_field(row, user, name) for name in read] == \
                [template_field(contact, user, name) for name in read]
        assert any(matches(tree, rows[i]) for tree in filters for i in ids)  # the filters select someone


def test_names_with_non_ascii_letters_are_stored_as_given(sessions, bundle):
    load_bundle(sessions, bundle)
    with sessions() as session:
        names = {(c.first_name, c.last_name) for c in session.query(Contact)}
    assert {("Søren", "Østergaard"), ("Zoë", "Brontë"), ("Hélène", "Lefèvre")} <= names


def test_fixed_fields_become_columns_and_custom_fields_text(bundle):
    obj = _contact(bundle)
    obj["custom_fields"] = {"orders": 12, "vip": True, "score": 2.5, "round": 3.0, "note": None, "tier": "gold"}
    row = contact_row(obj, "contacts.0")
    assert row["first_name"] == "Søren" and row["city"] == "København" and row["salutation"] == "Mr"
    assert row["landline_phone_number"] is None
    assert row["custom_fields"] == {"orders": "12", "vip": "true", "score": "2.5", "round": "3",
                                    "note": None, "tier": "gold"}
    assert row["user_id"] == 1 and row["team_id"] == 1
    assert row["created_at"] == datetime(2025, 2, 11, 9, 30, tzinfo=timezone.utc)


def test_consent_is_kept_whole_and_lifted_per_channel(bundle):
    row = contact_row(_contact(bundle, 4), "contacts.4")  # Noël: email false, sms false
    assert (row["consent_email"], row["consent_letter"], row["consent_call"]) == (False, True, True)
    assert row["consent"] == bundle["contacts"][4]["consent"]
    row = contact_row(_contact(bundle, 7), "contacts.7")  # no consent object at all
    assert (row["consent"], row["consent_email"], row["consent_letter"], row["consent_call"]) == (None,) * 4


def test_account_and_embedded_user(bundle):
    row, user = read_contact(_contact(bundle, 1), "contacts.1")
    assert row["account_id"] == "d4423996-bc55-4b58-a050-000000000001"
    assert row["account_name"] == "Bäckerei Müller GmbH"
    assert user["id"] == 2 and user["email"] == "florian@acme.example" and "team_id" not in user
    row, user = read_contact(_contact(bundle, 7), "contacts.7")
    assert row["user_id"] is None and user is None


def test_a_missing_fixed_field_is_null_and_ids_are_canonical(bundle):
    obj = _contact(bundle)
    obj["fixed_fields"] = [{"name": "email", "value": "a@b.example"}]
    obj["id"] = obj["id"].upper()
    row = contact_row(obj, "contacts.0")
    assert row["email"] == "a@b.example" and row["first_name"] is None
    assert row["id"] == bundle["contacts"][0]["id"]


def test_seed_shape_lists_every_fixed_field_in_order_with_metadata():
    contact = Contact(id="7b1c0d4e-5f60-4a7b-8c9d-000000000099", first_name="Ida", email="ida@x.example",
                      consent={"email": {"consent_given": True, "updated_at": "2025-01-01 00:00:00"}})
    shape = contact_to_seed(contact, None, Team(id=4, name="Support"))
    assert [f["name"] for f in shape["fixed_fields"]] == [f.name for f in FIXED_FIELDS]
    email = next(f for f in shape["fixed_fields"] if f["name"] == "email")
    assert email == {"id": 20, "type": "text", "name": "email", "label": "Email", "value": "ida@x.example",
                     "validation": "email", "required": False, "hidden": False, "read_only": False,
                     "sort_order": 0}
    assert list(shape["consent"]) == ["email", "letter", "call", "sms"]
    assert shape["consent"]["email"]["consent_given"] is True
    assert shape["consent"]["sms"] == {"consent_given": None, "updated_at": ""}
    assert shape["team"] == {"id": 4, "name": "Support"} and shape["user"] is None and shape["account"] is None


def _bad(mutate, bundle) -> dict:
    obj = _contact(bundle, 2)
    mutate(obj)
    with pytest.raises(ValidationFailed) as caught:
        contact_row(obj, "contacts.2")
    return caught.value.errors


@pytest.mark.parametrize("mutate, field", [
    (lambda o: o.pop("id"), "contacts.2.id"),
    (lambda o: o.update(id="not-a-uuid"), "contacts.2.id"),
    (lambda o: o.update(id=42), "contacts.2.id"),
    (lambda o: o["fixed_fields"].append({"name": "shoe_size", "value": "44"}), "contacts.2.fixed_fields.shoe_size"),
    (lambda o: o["fixed_fields"].append({"name": "email", "value": "x@y.example"}), "contacts.2.fixed_fields.email"),
    (lambda o: _set_fixed(o, "city", {"name": "Paris"}), "contacts.2.fixed_fields.city"),
    (lambda o: o["fixed_fields"].append({"value": "x"}), "contacts.2.fixed_fields.13.name"),
    (lambda o: o.update(fixed_fields={"email": "x"}), "contacts.2.fixed_fields"),
    (lambda o: o.update(custom_fields={"tags": ["a", "b"]}), "contacts.2.custom_fields.tags"),
    (lambda o: o.update(custom_fields="gold"), "contacts.2.custom_fields"),
    (lambda o: o.update(created_at="2025-13-01 00:00:00"), "contacts.2.created_at"),
    (lambda o: o.update(updated_at="2025-01-01T10:00:00Z"), "contacts.2.updated_at"),
    (lambda o: o["consent"]["email"].update(consent_given="yes"), "contacts.2.consent.email.consent_given"),
    (lambda o: o["consent"].update(letter=True), "contacts.2.consent.letter"),
    (lambda o: o.update(b2c="true"), "contacts.2.b2c"),
    (lambda o: o.update(team_id="1"), "contacts.2.team_id"),
    (lambda o: o.update(user={"first_name": "No id"}), "contacts.2.user.id"),
    (lambda o: o.update(user={"id": 1, "created_at": "yesterday"}), "contacts.2.user.created_at"),
    (lambda o: o.update(account={"id": "acc-1", "name": "Acme"}), "contacts.2.account.id"),
    (lambda o: o.update(account={"id": None, "name": "x" * 256}), "contacts.2.account.name"),
    (lambda o: o.update(status="s" * 65), "contacts.2.status"),
    (lambda o: o.update(social_profile=[]), "contacts.2.social_profile"),
])
def test_invalid_contacts_name_the_field(bundle, mutate, field):
    errors = _bad(mutate, bundle)
    assert field in errors, errors
    assert all(reason for reason in errors[field])


def test_every_problem_of_a_contact_is_reported_together(bundle):
    errors = _bad(lambda o: o.update(id="x", b2c=1, created_at="now"), bundle)
    assert {"contacts.2.id", "contacts.2.b2c", "contacts.2.created_at"} <= set(errors)


def test_a_contact_must_be_an_object():
    with pytest.raises(ValidationFailed) as caught:
        contact_row(["not", "an", "object"], "line.3")
    assert caught.value.errors == {"line.3": ["must be an object"]}
