"""The seed's contact (recipient) shape <-> ``contacts`` rows, and reading loaded values into columns.

A loaded contact is the seed's recipient object: ``id``, ``b2c``, ``account``, ``user``,
``team_id``, ``status``, ``fixed_fields`` (a list of ``{name, value, ...}``), ``custom_fields``
(an object of scalars), ``consent``, ``social_profile`` and the three times. Keys the row does
not hold (``team``, a recipients listing's ``delivery``) are ignored. A contact object is the
whole contact: a field it leaves out is stored as null.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Row, String, Table, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from storage import timefmt
from storage.coerce import scalar_text
from storage.db import is_postgres
from storage.errors import ValidationFailed
from storage.fields import CONSENT_CHANNELS, FIXED_FIELDS
from storage.models import Contact, ContactLike, Team, User
from storage.serialize import user_to_seed

INT_MAX = 2**31 - 1  # the Integer columns are 32-bit on PostgreSQL
USER_TEXT = ("first_name", "last_name", "phone_number", "job_title", "email", "profile_picture")
USER_BOOL = ("email_notifications", "system_user")
USER_TIME = ("created_at", "updated_at")


class Reader:
    """Reads one loaded object's values into column values, collecting errors by dotted field.

    Every read returns None when the key is missing or null (or when the value is wrong, in
    which case ``errors`` gains ``<where>.<key>``), so a caller reads all fields, then checks
    ``errors`` once and reports every problem of the object together.
    """

    def __init__(self, obj: dict, where: str, errors: dict[str, list[str]], table: Table | None = None) -> None:
        self.obj = obj
        self.where = where
        self.errors = errors
        self.table = table

    def fail(self, key: str, reason: str) -> None:
        """Record ``reason`` for the field ``key`` of this object."""
        self.errors.setdefault(f"{self.where}.{key}" if key else self.where, []).append(reason)

    def _get(self, key: str, required: bool) -> Any:
        value = self.obj.get(key)
        if value is None and required:
            self.fail(key, "is required")
        return value

    def text(self, key: str, required: bool = False, column: str | None = None) -> str | None:
        """A string, no longer than its column allows."""
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(key, "must be a string")
            return None
        limit = getattr(self.table.c[column or key].type, "length", None) if self.table is not None else None
        if limit and len(value) > limit:
            self.fail(key, f"must be at most {limit} characters")
            return None
        return value

    def integer(self, key: str, required: bool = False) -> int | None:
        """A whole number that fits the 32-bit id columns (1 .. 2147483647)."""
        value = self._get(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= INT_MAX:
            self.fail(key, f"must be an integer from 1 to {INT_MAX}")
            return None
        return value

    def boolean(self, key: str) -> bool | None:
        """true, false or null."""
        value = self.obj.get(key)
        if value is None or isinstance(value, bool):
            return value
        self.fail(key, "must be true, false or null")
        return None

    def time(self, key: str) -> datetime | None:
        """A ``Y-m-d H:i:s`` UTC time."""
        value = self.obj.get(key)
        if value is None:
            return None
        try:
            return timefmt.parse(value)
        except ValueError as exc:
            self.fail(key, str(exc))
            return None

    def uuid(self, key: str, required: bool = False) -> str | None:
        """A UUID string, stored in its canonical lower-case form."""
        value = self._get(key, required)
        if value is None:
            return None
        try:
            if not isinstance(value, str):
                raise ValueError
            return str(uuid.UUID(value))
        except ValueError:
            self.fail(key, "must be a UUID string")
            return None

    def mapping(self, key: str) -> dict | None:
        """A JSON object."""
        value = self.obj.get(key)
        if value is None or isinstance(value, dict):
            return value
        self.fail(key, "must be an object or null")
        return None

    def choice(self, key: str, choices: tuple[str, ...], required: bool = False) -> str | None:
        """One of ``choices``."""
        value = self._get(key, required)
        if value is None or value in choices:
            return value
        self.fail(key, f"must be one of: {', '.join(choices)}")
        return None


def user_row(obj: Any, where: str, errors: dict[str, list[str]], with_team: bool = True) -> dict | None:
    """Column values of ``users`` from a seed user object (plus ``team_id`` when ``with_team``).

    Only the keys the object carries are returned, so an upsert leaves the other columns as they
    are: a contact's embedded user (which has no ``team_id``) does not erase the user's team.
    """
    if not isinstance(obj, dict):
        errors.setdefault(where, []).append("must be an object")
        return None
    read = Reader(obj, where, errors, User.__table__)
    row: dict[str, Any] = {"id": read.integer("id", required=True)}
    for key in USER_TEXT:
        if key in obj:
            row[key] = read.text(key)
    for key in USER_BOOL:
        if key in obj:
            row[key] = read.boolean(key)
    for key in USER_TIME:
        if key in obj:
            row[key] = read.time(key)
    if with_team and "team_id" in obj:
        row["team_id"] = read.integer("team_id")
    return row


def contact_row(obj: dict, where: str) -> dict:
    """Column values of ``contacts`` from one seed recipient object; raise ValidationFailed.

    Error keys are put under ``where`` (``contacts.3.fixed_fields.email``, ``line.17.id``).
    """
    return read_contact(obj, where)[0]


def read_contact(obj: dict, where: str) -> tuple[dict, dict | None]:
    """The ``contacts`` row of a seed recipient object and the ``users`` row of its embedded
    ``user`` (None without one); raise ValidationFailed naming every bad field under ``where``."""
    errors: dict[str, list[str]] = {}
    if not isinstance(obj, dict):
        raise ValidationFailed({where: ["must be an object"]})
    read = Reader(obj, where, errors, Contact.__table__)
    row: dict[str, Any] = {
        "id": read.uuid("id", required=True),
        "b2c": read.boolean("b2c"),
        "team_id": read.integer("team_id"),
        "status": read.text("status"),
        "created_at": read.time("created_at"),
        "updated_at": read.time("updated_at"),
        "latest_activity_at": read.time("latest_activity_at"),
        "social_profile": read.mapping("social_profile"),
    }
    account = read.mapping("account") or {}
    account_read = Reader(account, f"{where}.account", errors, Contact.__table__)
    row["account_id"] = account_read.uuid("id")
    row["account_name"] = account_read.text("name", column="account_name")
    user = None
    if read.mapping("user") is not None:
        user = _embedded_user(obj["user"], f"{where}.user", errors)
    row["user_id"] = user["id"] if user else None
    row.update(_fixed_fields(obj.get("fixed_fields"), f"{where}.fixed_fields", errors))
    row["custom_fields"] = _custom_fields(obj.get("custom_fields"), f"{where}.custom_fields", errors)
    row.update(_consent(obj.get("consent"), f"{where}.consent", errors))
    if errors:
        raise ValidationFailed(errors)
    return row, user


def _embedded_user(obj: dict, where: str, errors: dict[str, list[str]]) -> dict | None:
    # Contacts repeat the same few users: reuse the row read from an identical object.
    try:
        return dict(_cached_user(tuple((key, type(value), value) for key, value in obj.items())))
    except (TypeError, _InvalidUser):  # unhashable values, or invalid: read again to report
        return user_row(obj, where, errors, with_team=False)


class _InvalidUser(Exception):
    pass


@lru_cache(maxsize=1024)
def _cached_user(items: tuple) -> dict:
    errors: dict[str, list[str]] = {}
    row = user_row({key: value for key, _, value in items}, "user", errors, with_team=False)
    if errors or row is None:
        raise _InvalidUser
    return row


_EMPTY_FIXED: dict[str, None] = {field.name: None for field in FIXED_FIELDS}


def _fixed_fields(items: Any, where: str, errors: dict[str, list[str]]) -> dict[str, str | None]:
    values: dict[str, str | None] = dict(_EMPTY_FIXED)
    if items is None:
        return values
    if not isinstance(items, list):
        errors.setdefault(where, []).append("must be a list of {name, value} objects")
        return values
    seen: set[str] = set()
    for index, item in enumerate(items):
        # The hot loop of a load (13 items a contact): plain checks, the common case first.
        name = item.get("name") if type(item) is dict else None
        if type(name) is not str:
            errors.setdefault(f"{where}.{index}.name", []).append("must be a fixed field name")
        elif name not in _EMPTY_FIXED:
            errors.setdefault(f"{where}.{name}", []).append(
                f"unknown fixed field; known: {', '.join(f.name for f in FIXED_FIELDS)}")
        elif name in seen:
            errors.setdefault(f"{where}.{name}", []).append("is given more than once")
        else:
            seen.add(name)
            value = item.get("value")
            if value is None or type(value) is str:
                values[name] = value
                continue
            try:
                values[name] = scalar_text(value)
            except TypeError as exc:
                errors.setdefault(f"{where}.{name}", []).append(str(exc))
    return values


def _custom_fields(obj: Any, where: str, errors: dict[str, list[str]]) -> dict[str, str | None] | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        errors.setdefault(where, []).append("must be an object of scalar values or null")
        return None
    values: dict[str, str | None] = {}
    for name, value in obj.items():
        try:
            values[name] = scalar_text(value)
        except TypeError as exc:
            errors.setdefault(f"{where}.{name}", []).append(str(exc))
    return values


def _consent(obj: Any, where: str, errors: dict[str, list[str]]) -> dict[str, Any]:
    row: dict[str, Any] = {"consent": None, **{f"consent_{ch}": None for ch in ("email", "letter", "call")}}
    if obj is None:
        return row
    if not isinstance(obj, dict):
        errors.setdefault(where, []).append("must be an object or null")
        return row
    row["consent"] = obj
    for channel in CONSENT_CHANNELS:
        entry = obj.get(channel)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            errors.setdefault(f"{where}.{channel}", []).append("must be an object with consent_given")
            continue
        given = Reader(entry, f"{where}.{channel}", errors).boolean("consent_given")
        if channel != "sms":
            row[f"consent_{channel}"] = given
    return row


_CONTACTS = Contact.__table__
# One array parameter: an IN list of a batch's ids is 200 parameters for psycopg to convert and
# PostgreSQL to parse on every batch (a third of loading them).
_BY_IDS_PG = select(_CONTACTS).where(_CONTACTS.c.id == any_(bindparam("ids", type_=ARRAY(String))))


def contacts_by_id(session: Session, ids: list[str]) -> dict[str, Row]:
    """The contacts with these ids (those that still exist), as rows of the contacts table: they
    have a ``Contact``'s attributes (``row.email``, ``row.custom_fields``...) and read the same for
    filters (``storage.filter_eval``), re-checks and templates, at half the CPU of ORM objects:
    a worker loads every recipient's contact this way, and changes none."""
    if is_postgres(session):
        rows = session.execute(_BY_IDS_PG, {"ids": ids})
    else:
        rows = session.execute(select(_CONTACTS).where(_CONTACTS.c.id.in_(ids)))
    return {row.id: row for row in rows}


def _account(contact: ContactLike) -> dict[str, Any] | None:
    if contact.account_id is None and contact.account_name is None:
        return None
    return {"id": contact.account_id, "name": contact.account_name}


# What a template reads of a contact besides its fixed fields, in the seed's names, by name.
_TEMPLATE_READS: dict[str, Callable[[ContactLike, Any], Any]] = {
    "id": lambda contact, user: contact.id,
    "b2c": lambda contact, user: contact.b2c,
    "account": lambda contact, user: _account(contact),
    "user": lambda contact, user: user,
    "team_id": lambda contact, user: contact.team_id,
    "status": lambda contact, user: contact.status,
    "custom_fields": lambda contact, user: contact.custom_fields,
    "created_at": lambda contact, user: timefmt.fmt(contact.created_at),
    "updated_at": lambda contact, user: timefmt.fmt(contact.updated_at),
}
FIXED_NAMES: tuple[str, ...] = tuple(field.name for field in FIXED_FIELDS)  # in the catalogue's order


def template_field(contact: ContactLike, user: Any, name: str) -> Any:
    """What a template reads of a contact besides its fixed fields (a fixed field's value is the
    contact's attribute of its name), one value by its seed name: ``id``, ``b2c``, ``account``,
    ``user`` (``user_to_seed``'s dict, passed in), ``team_id``, ``status``, ``custom_fields``,
    ``created_at``, ``updated_at``. ``contact``: a Contact or a row of ``contacts_by_id``. Delivery
    reads them one at a time, as a template asks (``renderers.context.contact_record``)."""
    return _TEMPLATE_READS[name](contact, user)


def contact_to_seed(contact: Contact, user: User | None, team: Team | None = None) -> dict[str, Any]:
    """The seed's recipient shape of a stored contact (without a recipients listing's ``delivery``)."""
    account = _account(contact)
    stored_consent = contact.consent or {}
    consent = {ch: stored_consent.get(ch) or {"consent_given": None, "updated_at": ""} for ch in CONSENT_CHANNELS}
    consent.update({k: v for k, v in stored_consent.items() if k not in consent})
    return {
        "id": contact.id,
        "b2c": contact.b2c,
        "account": account,
        "user": user_to_seed(user),
        "team_id": contact.team_id,
        "team": {"id": team.id, "name": team.name} if team is not None else None,
        "status": contact.status,
        "fixed_fields": [
            {
                "id": field.id,
                "type": field.type,
                "name": field.name,
                "label": field.label,
                "value": getattr(contact, field.name),
                "validation": field.validation,
                "required": field.required,
                "hidden": field.hidden,
                "read_only": field.read_only,
                "sort_order": field.sort_order,
            }
            for field in FIXED_FIELDS
        ],
        "custom_fields": contact.custom_fields,
        "created_at": timefmt.fmt(contact.created_at),
        "updated_at": timefmt.fmt(contact.updated_at),
        "latest_activity_at": timefmt.fmt(contact.latest_activity_at),
        "social_profile": contact.social_profile,
        "consent": consent,
    }
