"""The per-recipient ledger: set-based fan-out, conditional claims and transitions, reconcile queries.

Every state change is a conditional UPDATE (``... WHERE status = <expected>``), so a message that
arrives twice, or two workers racing on the same rows, change each row at most once. The campaign's
counters move in the same transaction as the rows they count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, and_, case, func, insert, literal, or_, select, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import Boolean, Integer

from storage.addresses import (EMAIL_LOOSE_PG, LONG_LABEL_MIN_LENGTH, LONG_LABEL_PG, MAX_LENGTH, MAX_LOCAL,
                               is_email)
from storage.db import is_postgres
from storage.filter_sql import compile_filters
from storage.filters import FilterTree
from storage.models import Campaign, Contact, ContactLike, Recipient, UTCDateTime
from storage.statuses import OPEN, CampaignStatus, RecipientStatus as R


class valid_email(FunctionElement):  # noqa: N801 - SQL function style
    """``TRUE`` when the column holds a usable address (storage.addresses.is_email, in SQL)."""

    type = Boolean()
    inherit_cache = True


@compiles(valid_email, "postgresql")
def _valid_email_pg(element, compiler, **kw):
    (arg,) = list(element.clauses)
    column = compiler.process(arg, **kw)
    # the lengths first (cheap), as storage.addresses.is_email checks them; then the pattern without
    # its counted repetitions, and the label length only where an address is long enough to break it
    pattern = compiler.process(literal(EMAIL_LOOSE_PG), **kw)
    long_label = compiler.process(literal(LONG_LABEL_PG), **kw)
    return (f"(char_length({column}) <= {MAX_LENGTH} AND strpos({column}, '@') BETWEEN 2 AND {MAX_LOCAL + 1}"
            f" AND {column} ~ {pattern} AND (char_length({column}) < {LONG_LABEL_MIN_LENGTH}"
            f" OR split_part({column}, '@', 2) !~ {long_label}))")


@compiles(valid_email, "sqlite")
def _valid_email_sqlite(element, compiler, **kw):
    (arg,) = list(element.clauses)
    return f"cd_is_email({compiler.process(arg, **kw)})"


def _blank(column) -> ColumnElement[bool]:
    return or_(column.is_(None), column == "")


def skip_reason(campaign_type: str) -> ColumnElement:
    """SQL for why a selected contact is skipped on this channel, NULL when it can be delivered."""
    if campaign_type == "email":
        whens = [(Contact.consent_email.is_(False), "no_consent"), (_blank(Contact.email), "no_email"),
                 (~valid_email(Contact.email), "invalid_email")]
    elif campaign_type == "letter":
        whens = [(Contact.consent_letter.is_(False), "no_consent"), (_blank(Contact.address), "no_address")]
    else:
        whens = [(Contact.consent_call.is_(False), "no_consent"),
                 (and_(_blank(Contact.mobile_phone_number), _blank(Contact.landline_phone_number)), "no_phone")]
    return case(*whens, else_=None)


@dataclass(frozen=True)
class Inserted:
    """What a fan-out wrote: its rows, those skipped, and the first and last id of the pending ones."""

    total: int
    skipped: int
    first_pending: int | None
    last_pending: int | None

    @property
    def pending(self) -> int:
        return self.total - self.skipped

    def batches(self, campaign_id: str, size: int) -> list[Batch] | None:
        """The pending rows in id ranges of ``size`` when they hold consecutive ids (no skipped or
        other row among them), which is arithmetic; None when ``open_batches`` must find them."""
        if self.first_pending is None or self.last_pending is None:
            return []
        if self.last_pending - self.first_pending + 1 != self.pending:
            return None
        return [Batch(campaign_id, lo, min(lo + size - 1, self.last_pending))
                for lo in range(self.first_pending, self.last_pending + 1, size)]


def insert_recipients(session: Session, campaign: Campaign, tree: FilterTree, now: datetime) -> Inserted:
    """Insert one ledger row per selected contact in one statement, for a campaign with none yet,
    whose row the caller has locked (``worker.pipeline.fanout.dispatch``)."""
    # The skip reason once per contact: the subquery's OFFSET 0 keeps PostgreSQL from inlining it
    # into both columns that read it (the e-mail check is a regular expression).
    picked = (select(Contact.id.label("contact_id"), skip_reason(campaign.type).label("reason"))
              .where(compile_filters(tree, session.get_bind().dialect.name)).offset(0).subquery("picked"))
    source = (
        select(
            literal(campaign.id), picked.c.contact_id,
            case((picked.c.reason.is_(None), literal(R.PENDING.value)), else_=literal(R.SKIPPED.value)),
            picked.c.reason, literal(0), literal(now, UTCDateTime), literal(now, UTCDateTime),
        )
        .order_by(picked.c.contact_id)
    )
    columns = ["campaign_id", "contact_id", "status", "reason", "attempts", "created_at", "updated_at"]
    # No ON CONFLICT: the caller holds the campaign's row lock and inserts only for a campaign not
    # fanned out yet, and rows and dispatched_at commit together, so no row can exist already (the
    # unique index would refuse one loudly). Speculative insertion cost ~2.3 s of a million rows.
    insert_rows = insert(Recipient).from_select(columns, source)
    if is_postgres(session):
        # Counted from what the INSERT returns, in the same statement: no second pass over the rows.
        inserted = insert_rows.returning(Recipient.status).cte("inserted")
        counts = dict(session.execute(select(inserted.c.status, func.count()).group_by(inserted.c.status)).all())
    else:  # SQLite has no INSERT in a WITH
        session.execute(insert_rows)
        counts = dict(session.execute(select(Recipient.status, func.count())
                                      .where(Recipient.campaign_id == campaign.id).group_by(Recipient.status)).all())
    # The ends of the pending ids: from the (campaign, id) index, a few rows read at each end.
    first, last = session.execute(select(func.min(Recipient.id), func.max(Recipient.id)).where(
        Recipient.campaign_id == campaign.id, Recipient.status == R.PENDING)).one()
    return Inserted(total=sum(counts.values()), skipped=counts.get(R.SKIPPED, 0), first_pending=first,
                    last_pending=last)


@dataclass(frozen=True)
class Batch:
    """A contiguous range of ledger ids of one campaign: what a delivery message carries."""

    campaign_id: str
    first_id: int
    last_id: int


def open_batches(session: Session, campaign_id: str, size: int, status: R = R.PENDING) -> list[Batch]:
    """Split the campaign's rows in ``status`` into id ranges of at most ``size`` rows (in SQL)."""
    numbered = (
        # Plain SQL integer division. SQLAlchemy 2's / is true division (one group per row) and its //
        # compiles to FLOOR(), which SQLite has only when built with its math functions.
        select(Recipient.id, (func.row_number().over(order_by=Recipient.id) - 1).self_group()
               .op("/", return_type=Integer)(size).label("grp"))
        .where(Recipient.campaign_id == campaign_id, Recipient.status == status)
        .subquery()
    )
    rows = session.execute(
        select(func.min(numbered.c.id), func.max(numbered.c.id)).group_by(numbered.c.grp).order_by(func.min(numbered.c.id))
    ).all()
    return [Batch(campaign_id, int(lo), int(hi)) for lo, hi in rows]


@dataclass(frozen=True)
class Claimed:
    id: int
    contact_id: str
    attempts: int


def claim(session: Session, batch: Batch, now: datetime) -> list[Claimed]:
    """Move the batch's pending rows to ``sending`` and return them; rows others hold are not returned."""
    result = session.execute(
        update(Recipient)
        .where(Recipient.campaign_id == batch.campaign_id, Recipient.id.between(batch.first_id, batch.last_id),
               Recipient.status == R.PENDING)
        .values(status=R.SENDING, attempts=Recipient.attempts + 1, updated_at=now)
        .returning(Recipient.id, Recipient.contact_id, Recipient.attempts)
    )
    return sorted((Claimed(*row) for row in result.all()), key=lambda c: c.id)


def finish(session: Session | Connection, status: R, outcomes: Iterable[tuple[int, str | None]], now: datetime,
           artifact_key: str | None = None) -> int:
    """Move open rows to a final ``status`` (sent/failed/skipped) with their reasons, and
    ``artifact_key`` (where what was made for them is stored) when given.

    The rows are normally ``sending``; ``pending`` is accepted too: rows whose lease ran out while
    the database was unreachable, released by reconcile before their outcome could be written. What
    was sent is recorded as sent, so nothing takes them again. One UPDATE per distinct reason;
    returns the rows that changed. The campaign row is not touched here: workers finishing batches
    in parallel would queue on its lock.
    """
    by_reason: dict[str | None, list[int]] = defaultdict(list)
    for row_id, reason in outcomes:
        by_reason[reason].append(row_id)
    changed = 0
    for reason, ids in by_reason.items():
        result = session.execute(
            update(Recipient)
            .where(Recipient.id.in_(ids), Recipient.status.in_(OPEN))
            .values(status=status, reason=reason, updated_at=now,
                    **({"artifact_key": artifact_key} if artifact_key else {}))
            .execution_options(synchronize_session=False)
        )
        changed += result.rowcount
    return changed


def touch_progress(session: Session, campaign_id: str, now: datetime, every: timedelta) -> None:
    """Note that the campaign moved (reconcile's stall detection), at most once per ``every``."""
    session.execute(update(Campaign).where(
        Campaign.id == campaign_id, or_(Campaign.progress_at.is_(None), Campaign.progress_at < now - every))
        .values(progress_at=now))


def release(session: Session | Connection, ids: list[int], now: datetime, reason: str | None = None, *,
            attempted: bool = True) -> int:
    """Return ``sending`` rows to ``pending``: a transient failure (they will be tried again), or,
    with ``attempted=False``, rows never tried (the campaign paused or braked), whose claim then
    does not count as an attempt."""
    if not ids:
        return 0
    values: dict = {"status": R.PENDING, "updated_at": now}
    if attempted:
        values["reason"] = reason
    else:
        values["attempts"] = Recipient.attempts - 1
    return session.execute(
        update(Recipient).where(Recipient.id.in_(ids), Recipient.status == R.SENDING)
        .values(**values).execution_options(synchronize_session=False)
    ).rowcount


def renew(session: Session, ids: Iterable[int], now: datetime) -> int:
    """Renew the lease of ``sending`` rows a live worker holds (its heartbeat)."""
    ids = list(ids)
    if not ids:
        return 0
    return session.execute(
        update(Recipient).where(Recipient.id.in_(ids), Recipient.status == R.SENDING)
        .values(updated_at=now).execution_options(synchronize_session=False)
    ).rowcount


def release_stale(session: Session, now: datetime, lease: timedelta) -> list[str]:
    """Rows left ``sending`` longer than ``lease`` (their worker died) go back to ``pending``, or,
    in a cancelled campaign, which takes no recipient any more, are skipped (reason ``cancelled``).

    Returns the campaign ids that had such rows.
    """
    # Only campaigns fanned out and not finalised can hold such rows: looked up in their (campaign,
    # status) index, not in the whole index, which grows with every recipient ever sent (a million
    # rows: 1 ms a tick against 0.02).
    unsettled = select(Campaign.id).where(Campaign.dispatched_at.is_not(None), Campaign.finalised_at.is_(None))
    stale = and_(Recipient.campaign_id.in_(unsettled), Recipient.status == R.SENDING,
                 Recipient.updated_at < now - lease)
    campaigns = list(session.scalars(select(Recipient.campaign_id).where(stale).distinct()))
    if campaigns:
        cancelled = select(Campaign.id).where(Campaign.id.in_(campaigns), Campaign.status == CampaignStatus.CANCELLED)
        session.execute(update(Recipient).where(stale, Recipient.campaign_id.in_(cancelled))
                        .values(status=R.SKIPPED, reason="cancelled", updated_at=now)
                        .execution_options(synchronize_session=False))
        session.execute(update(Recipient).where(stale).values(status=R.PENDING, updated_at=now)
                        .execution_options(synchronize_session=False))
    return campaigns


def skip_pending(session: Session, campaign_id: str, reason: str, now: datetime,
                 ids: list[int] | None = None) -> int:
    """Skip the campaign's ``pending`` rows (of ``ids`` only, when given; ``sending`` ones too then:
    a worker's own rows it did not attempt) with ``reason`` (a cancel); how many."""
    where = [Recipient.campaign_id == campaign_id, Recipient.status == R.PENDING]
    if ids is not None:
        where = [Recipient.campaign_id == campaign_id, Recipient.id.in_(ids), Recipient.status.in_(OPEN)]
    return session.execute(
        update(Recipient).where(*where)
        .values(status=R.SKIPPED, reason=reason, updated_at=now).execution_options(synchronize_session=False)
    ).rowcount


def has_rows(session: Session, campaign_id: str, statuses: Iterable[str] = OPEN) -> bool:
    """True when any row of the campaign has one of ``statuses`` (by default: is pending or sending)."""
    return session.scalar(
        select(Recipient.id).where(Recipient.campaign_id == campaign_id, Recipient.status.in_(statuses)).limit(1)
    ) is not None


def open_rows(session: Session, campaign_id: str) -> int:
    """How many rows of the campaign are pending or sending."""
    return session.scalar(
        select(func.count()).where(Recipient.campaign_id == campaign_id, Recipient.status.in_(OPEN))
    ) or 0


__all__ = [
    "Batch", "Claimed", "Inserted", "claim", "finish", "touch_progress", "has_rows", "insert_recipients",
    "open_batches", "open_rows",
    "release", "release_stale", "renew", "skip_pending", "skip_reason", "skip_reason_of", "valid_email",
]


def skip_reason_of(campaign_type: str, contact: ContactLike) -> str | None:
    """The Python twin of ``skip_reason``: re-checked on the current contact right before delivery."""
    def blank(value: str | None) -> bool:
        return value is None or value == ""

    if campaign_type == "email":
        if contact.consent_email is False:
            return "no_consent"
        if blank(contact.email):
            return "no_email"
        return None if is_email(contact.email) else "invalid_email"
    if campaign_type == "letter":
        if contact.consent_letter is False:
            return "no_consent"
        return "no_address" if blank(contact.address) else None
    if contact.consent_call is False:
        return "no_consent"
    return "no_phone" if blank(contact.mobile_phone_number) and blank(contact.landline_phone_number) else None
