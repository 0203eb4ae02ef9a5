"""Writing a group of delivery outcomes to the ledger at once, and reading back the campaigns' status.

Outcomes are written after every SMTP round, so this runs hundreds of times a second under load:
on PostgreSQL it is one statement (one UPDATE of the ledger rows with each row's new status and,
for those sent, the archived content, then the status read) sent on a connection in autocommit
mode, so a write is one network round trip, planned once (psycopg prepares it after a few runs),
with no SQL built or compiled per write, and the arrays sent in binary (``%b``: no per-element
quoting of the archived contents, which are compressed bytes: storage.archive). SQLite
(embedded, no network) runs the same writes as
separate statements in the caller's transaction.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, bindparam, or_, select, update

from storage.db import is_postgres
from storage.ledger import finish, release
from storage.models import Campaign, Recipient
from storage.statuses import OPEN
from storage.statuses import RecipientStatus as R


@dataclass
class OutcomeRows:
    """What one write changes: archived contents, rows reaching a final status, rows to try again."""

    archive: dict[int, bytes] = field(default_factory=dict)  # row id -> the content sent (storage.archive.Packer)
    # (row id, final status, reason, artifact key): sent, failed or skipped
    final: list[tuple[int, str, str | None, str | None]] = field(default_factory=list)
    again: list[tuple[int, str]] = field(default_factory=list)  # (row id, the relay's reply): pending again
    asking: set[str] = field(default_factory=set)  # campaigns whose status to read after the writes


# Final statuses move open rows (``pending`` too: a lease that ran out while the database was
# unreachable, see ledger.finish); ``pending`` again moves only ``sending`` rows (ledger.release).
# Only a row that moves takes its content: a send repeated after a crash keeps the first archived.
_PG_WRITE = """
WITH moved AS (
    UPDATE recipients AS r
    SET status = o.status, reason = o.reason, updated_at = %(now)s,
        artifact_key = coalesce(o.artifact_key, r.artifact_key), content = coalesce(o.content, r.content)
    FROM unnest(%(ids)b::bigint[], %(statuses)b::varchar[], %(reasons)b::text[], %(artifacts)b::varchar[],
                %(contents)b::bytea[])
        AS o(id, status, reason, artifact_key, content)
    WHERE r.id = o.id AND (r.status = 'sending' OR (r.status = 'pending' AND o.status <> 'pending'))
)
SELECT id, status FROM campaigns WHERE id = ANY(%(asking)b::varchar[])
"""


def prepare_connection(conn: Connection) -> Connection:
    """Make ``conn`` fit for ``write_outcomes``: on PostgreSQL each write commits on its own."""
    if is_postgres(conn):
        conn.execution_options(isolation_level="AUTOCOMMIT")
    return conn


def write_outcomes(conn: Connection, rows: OutcomeRows, now: datetime) -> dict[str, str]:
    """Write ``rows`` and return the status of each campaign in ``rows.asking`` that still exists, as
    of after the writes. Run it in ``conn.begin()`` on a connection from ``prepare_connection``: all
    or nothing is written (on PostgreSQL the one statement commits itself)."""
    if is_postgres(conn):
        return _write_pg(conn, rows, now)
    return _write_generic(conn, rows, now)


def _write_pg(conn: Connection, rows: OutcomeRows, now: datetime) -> dict[str, str]:
    moved = rows.final + [(row_id, R.PENDING.value, reply, None) for row_id, reply in rows.again]
    params = {
        "now": now,
        "ids": [m[0] for m in moved], "statuses": [str(m[1]) for m in moved], "reasons": [m[2] for m in moved],
        "artifacts": [m[3] for m in moved], "contents": [rows.archive.get(m[0]) for m in moved],
        "asking": sorted(rows.asking),
    }
    return dict(conn.exec_driver_sql(_PG_WRITE, params).all())


# As on PostgreSQL, only rows about to move take their content (written first, so the status test
# still tells them). Not IN (...): an expanding parameter cannot be run for many rows at once.
_ARCHIVE = (update(Recipient).where(Recipient.id == bindparam("row_id"),
                                    or_(*(Recipient.status == status for status in OPEN)))
            .values(content=bindparam("packed")))


def _write_generic(conn: Connection, rows: OutcomeRows, now: datetime) -> dict[str, str]:
    if rows.archive:  # in the caller's transaction with the rest: all or nothing
        conn.execute(_ARCHIVE, [{"row_id": row_id, "packed": packed} for row_id, packed in rows.archive.items()])
    by_kind: dict[tuple[str, str | None], list[tuple[int, str | None]]] = defaultdict(list)
    for row_id, status, reason, artifact_key in rows.final:
        by_kind[(status, artifact_key)].append((row_id, reason))
    for (status, artifact_key), outcomes in by_kind.items():
        finish(conn, R(status), outcomes, now, artifact_key=artifact_key)
    by_reply: dict[str, list[int]] = defaultdict(list)
    for row_id, reply in rows.again:
        by_reply[reply].append(row_id)
    for reply, ids in by_reply.items():
        release(conn, ids, now, reason=reply)
    if not rows.asking:
        return {}
    return dict(conn.execute(select(Campaign.id, Campaign.status).where(Campaign.id.in_(rows.asking))).all())
