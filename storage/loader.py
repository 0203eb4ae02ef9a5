"""Loading data: a bundle (CONTRACT section 5) or contacts as JSON Lines, upserted by id.

Every row is written with ``INSERT .. ON CONFLICT (id) DO UPDATE`` of the columns the input
gives, so loading the same data twice leaves the same rows. A bundle is validated whole, then
written in one transaction: an error anywhere writes nothing. JSON Lines stream in batches of
``batch_size`` lines, one transaction per batch, so memory stays bounded whatever the file size.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterable
from os import PathLike
from typing import Any

from sqlalchemy import Connection, Table, null
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import JSON

from storage.campaign_settings import apply_settings
from storage.contacts import Reader, read_contact, user_row
from storage.errors import ValidationFailed
from storage.models import Contact, RelationsPath, Team, Template, User

try:  # three times faster than json on a seed contact line; json does the same, slower
    from orjson import dumps as _dump_bytes, loads as _fast_loads
except ImportError:  # pragma: no cover
    _fast_loads, _dump_bytes = json.loads, lambda value: json.dumps(value).encode()

KINDS = ("settings", "teams", "users", "templates", "relations_paths", "contacts")
TEMPLATE_TYPES = ("email", "letter")
# A bad JSON Lines file reports at most this many bad lines (the first one decides what was loaded).
MAX_BAD_LINES = 20
# From this many rows on, PostgreSQL upserts go through COPY and a staging table.
COPY_MIN_ROWS = 100


def load_bundle(sessions: sessionmaker[Session], data: Any) -> dict[str, int]:
    """Validate a whole bundle, then upsert it in one transaction; return counts per kind.

    ``users`` counts the distinct users written: the bundle's own and those embedded in contacts.
    Raise ValidationFailed (keys like ``teams.0.name``, ``contacts.3.fixed_fields.email``) and
    write nothing when any part is invalid.
    """
    if not isinstance(data, dict):
        raise ValidationFailed({"file": ["A bundle must be a JSON object with some of the keys: "
                                         + ", ".join(KINDS) + "."]})
    errors: dict[str, list[str]] = {}
    for key in sorted(set(data) - set(KINDS)):
        errors[key] = [f"unknown key; a bundle holds: {', '.join(KINDS)}"]
    teams = _rows(data, "teams", _team_row, errors)
    users = _rows(data, "users", lambda obj, where, errs: user_row(obj, where, errs), errors)
    templates = _rows(data, "templates", _template_row, errors)
    paths = _rows(data, "relations_paths", _path_row, errors)
    contacts, embedded_users = _bundle_contacts(data.get("contacts"), errors)
    with sessions.begin() as session:
        if data.get("settings") is not None:
            try:
                apply_settings(session, data["settings"], where="settings")
            except ValidationFailed as exc:
                errors.update(exc.errors)
        if errors:
            raise ValidationFailed(errors)  # leaving the block rolls the settings back
        conn = session.connection()
        upsert(conn, Team.__table__, teams)
        # Embedded users first, so the bundle's own user objects have the last word.
        upsert(conn, User.__table__, _last_wins(embedded_users))
        upsert(conn, User.__table__, users)
        upsert(conn, Template.__table__, templates)
        upsert(conn, RelationsPath.__table__, paths)
        upsert(conn, Contact.__table__, contacts)
    return {
        "settings": 0 if data.get("settings") is None else 1,
        "teams": len(teams),
        "users": len({row["id"] for row in users} | {row["id"] for row in embedded_users}),
        "templates": len(templates),
        "relations_paths": len(paths),
        "contacts": len(contacts),
    }


def load_jsonl(sessions: sessionmaker[Session], path: str | PathLike, batch_size: int = 2000) -> dict[str, int]:
    """Stream contacts from a JSON Lines file (one seed recipient object a line), upserting in batches.

    Returns ``{"contacts": lines loaded, "users": distinct embedded users}``. On a bad line the
    valid lines before it are written (each batch commits), nothing after it is, and
    ValidationFailed names ``line.N.<field>`` for up to MAX_BAD_LINES bad lines. Since loading is
    idempotent, fixing the file and loading it again is safe; the error message says so.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise ValidationFailed({"file": [f"cannot read {path}: {exc.strerror or exc}"]}) from None
    contacts: dict[str, dict] = {}
    users: dict[int, dict] = {}
    user_ids: set[int] = set()
    loaded = 0
    errors: dict[str, list[str]] = {}
    bad_lines: list[int] = []
    with handle, _BatchWriter(sessions) as writer:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                row, user = _parse_line(raw, f"line.{number}")
            except ValidationFailed as exc:
                errors.update(exc.errors)
                bad_lines.append(number)
                if len(bad_lines) >= MAX_BAD_LINES:
                    break
                continue
            if bad_lines:
                continue  # after the first bad line, only look for more errors
            contacts[row["id"]] = row  # the same id twice in one batch: the later line wins
            if user is not None:
                users[user["id"]] = user
                user_ids.add(user["id"])
            loaded += 1
            if len(contacts) >= batch_size:
                writer.put(contacts, users)
                contacts, users = {}, {}
        writer.put(contacts, users)
    if bad_lines:
        more = " (and maybe more: the check stopped there)" if len(bad_lines) >= MAX_BAD_LINES else ""
        raise ValidationFailed(errors, (
            f"Line {bad_lines[0]} is invalid; {len(bad_lines)} bad line(s) reported{more}. "
            f"The {loaded} contact line(s) before line {bad_lines[0]} were loaded and nothing after it. "
            "Loading is idempotent: fix the file and load it again."))
    return {"contacts": loaded, "users": len(user_ids)}


def upsert(conn: Connection, table: Table, rows: Iterable[dict]) -> None:
    """Insert ``rows`` into ``table``, updating on an existing id the columns each row gives.

    Rows are grouped by their set of keys (one statement per group) and must carry every
    NOT NULL column. No id may appear twice in one call: PostgreSQL refuses to update a row
    twice in one statement.
    """
    groups: dict[tuple[str, ...], list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    for keys, group in groups.items():
        if conn.dialect.name == "postgresql" and len(group) >= COPY_MIN_ROWS:
            _copy_upsert(conn, table, keys, group)
        else:
            _executemany_upsert(conn, table, keys, group)


def _executemany_upsert(conn: Connection, table: Table, keys: tuple[str, ...], rows: list[dict]) -> None:
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(table)
    changes = {key: stmt.excluded[key] for key in keys if key != "id"}
    if changes:
        stmt = stmt.on_conflict_do_update(index_elements=[table.c.id], set_=changes)
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=[table.c.id])
    json_keys = [c.name for c in table.columns if isinstance(c.type, JSON) and c.name in keys]
    if json_keys:
        # SQL NULL, not the JSON document 'null', for an absent object.
        rows = [{**row, **{k: null() for k in json_keys if row[k] is None}} for row in rows]
    conn.execute(stmt, rows)


def _copy_upsert(conn: Connection, table: Table, keys: tuple[str, ...], rows: list[dict]) -> None:
    # COPY into a staging table, then one INSERT .. SELECT .. ON CONFLICT: about 2.5 times the
    # rows/s of a pipelined executemany (benchmarks/load_contacts.py), same rows in the end.
    quote = conn.dialect.identifier_preparer.quote
    stage = quote(f"_load_{table.name}")
    columns = ", ".join(quote(key) for key in keys)
    json_keys = {c.name for c in table.columns if isinstance(c.type, JSON)}
    changes = ", ".join(f"{quote(key)} = excluded.{quote(key)}" for key in keys if key != "id")
    on_conflict = f"DO UPDATE SET {changes}" if changes else "DO NOTHING"
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(f"CREATE TEMP TABLE {stage} (LIKE {quote(table.name)}) ON COMMIT DROP")
        with cursor.copy(f"COPY {stage} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([
                    _dump_bytes(row[key]).decode() if key in json_keys and row[key] is not None
                    else row[key]
                    for key in keys
                ])
        cursor.execute(f"INSERT INTO {quote(table.name)} ({columns}) SELECT {columns} FROM {stage} "
                       f"ON CONFLICT (id) {on_conflict}")
        cursor.execute(f"DROP TABLE {stage}")
    finally:
        cursor.close()


class _BatchWriter:
    """Upserts batches in a thread of its own, one transaction each, so that parsing the next
    batch overlaps the database's work on this one. At most one batch waits in the queue:
    memory stays bounded by three batches (parsing, waiting, writing)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="load-writer", daemon=True)

    def __enter__(self) -> _BatchWriter:
        self._thread.start()
        return self

    def put(self, contacts: dict[str, dict], users: dict[int, dict]) -> None:
        """Queue one batch (blocks while the previous one waits); raise the writer's error."""
        if self._error is not None:
            raise self._error
        if contacts or users:
            self._queue.put((list(contacts.values()), list(users.values())))

    def __exit__(self, *exc_info) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and exc_info[0] is None:
            raise self._error

    def _run(self) -> None:
        try:
            with self._sessions() as session:
                while (batch := self._queue.get()) is not None:
                    conn = session.connection()
                    upsert(conn, User.__table__, batch[1])
                    upsert(conn, Contact.__table__, batch[0])
                    session.commit()
        except BaseException as exc:  # handed to the reading thread, which raises it
            self._error = exc
            while self._queue.get() is not None:
                pass  # keep taking batches so the reader never blocks; they are dropped


def _parse_line(raw: bytes, where: str) -> tuple[dict, dict | None]:
    try:
        obj = _fast_loads(raw)
    except ValueError:
        try:  # orjson refuses a few things json takes (integers past 64 bits); json has the message
            obj = json.loads(raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise ValidationFailed({where: [f"not valid JSON: {exc}"]}) from None
    return read_contact(obj, where)


def _rows(data: dict, kind: str, read, errors: dict[str, list[str]]) -> list[dict]:
    """Read the list ``data[kind]`` with ``read(obj, where, errors)``; refuse an id given twice."""
    items = data.get(kind)
    if items is None:
        return []
    if not isinstance(items, list):
        errors.setdefault(kind, []).append("must be a list of objects")
        return []
    rows: list[dict] = []
    first_at: dict[Any, int] = {}
    for index, obj in enumerate(items):
        where = f"{kind}.{index}"
        row = read(obj, where, errors)
        if row is None or row.get("id") is None:
            continue
        if row["id"] in first_at:
            errors.setdefault(f"{where}.id", []).append(f"duplicate id: also at {kind}.{first_at[row['id']]}")
            continue
        first_at[row["id"]] = index
        rows.append(row)
    return rows


def _bundle_contacts(items: Any, errors: dict[str, list[str]]) -> tuple[list[dict], list[dict]]:
    users: list[dict] = []

    def read(obj: Any, where: str, errs: dict[str, list[str]]) -> dict | None:
        try:
            row, user = read_contact(obj, where)
        except ValidationFailed as exc:
            errs.update(exc.errors)
            return None
        if user is not None:
            users.append(user)
        return row

    return _rows({"contacts": items}, "contacts", read, errors), users


def _last_wins(rows: list[dict]) -> list[dict]:
    return list({row["id"]: row for row in rows}.values())


def _reader(obj: Any, where: str, errors: dict[str, list[str]], table: Table) -> Reader | None:
    if isinstance(obj, dict):
        return Reader(obj, where, errors, table)
    errors.setdefault(where, []).append("must be an object")
    return None


def _team_row(obj: Any, where: str, errors: dict[str, list[str]]) -> dict | None:
    if (read := _reader(obj, where, errors, Team.__table__)) is None:
        return None
    return {"id": read.integer("id", required=True), "name": read.text("name", required=True)}


def _template_row(obj: Any, where: str, errors: dict[str, list[str]]) -> dict | None:
    if (read := _reader(obj, where, errors, Template.__table__)) is None:
        return None
    return {
        "id": read.integer("id", required=True),
        "type": read.choice("type", TEMPLATE_TYPES, required=True),
        "company_id": read.integer("company_id"),
        "title": read.text("title"),
        "user_id": read.integer("user_id"),
        "content": read.text("content") or "",
    }


def _path_row(obj: Any, where: str, errors: dict[str, list[str]]) -> dict | None:
    if (read := _reader(obj, where, errors, RelationsPath.__table__)) is None:
        return None
    return {"id": read.uuid("id", required=True), "name": read.text("name")}
