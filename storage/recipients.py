"""``campaigns recipients``: the contacts a campaign selects, each with its delivery state."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Select, func, null, or_, select
from sqlalchemy.orm import Session

from storage.contacts import contact_to_seed
from storage.filter_sql import compile_filters
from storage.filters import parse_filters
from storage.models import Campaign, Contact, Recipient, User
from storage.statuses import RecipientStatus
from storage.timefmt import fmt


def selected_contacts(session: Session, campaign: Campaign) -> Select:
    """``SELECT contacts`` the campaign's filter selects (the same SQL the fan-out uses)."""
    tree = parse_filters(campaign.filter or [])
    return select(Contact).where(compile_filters(tree, session.get_bind().dialect.name))


def _search(query: Select, search: str | None) -> Select:
    if not search:
        return query
    pattern = search.lower()
    columns = (Contact.first_name, Contact.last_name, Contact.email, Contact.account_name)
    return query.where(or_(*(func.lower(c).contains(pattern, autoescape=True) for c in columns)))


def _delivery(row: Recipient | None) -> dict[str, Any]:
    if row is None:
        return {"status": RecipientStatus.PENDING.value, "reason": None, "at": None}
    return {"status": row.status, "reason": row.reason, "at": fmt(row.updated_at)}


def _recipients(session: Session, campaign: Campaign, contact: Sequence[Any],
                delivery: Sequence[Any]) -> tuple[Select, Any]:
    """``SELECT *contact, *delivery`` (columns or entities of Contact, then of Recipient) over the
    campaign's recipients, and the column that orders them.

    Before dispatch the filter is evaluated live, with NULL for each ``delivery`` item; once
    dispatched the ledger is the list (the set the campaign actually took), so later contact edits
    do not change who was a recipient.
    """
    if campaign.dispatched_at is None:
        live = selected_contacts(session, campaign).with_only_columns(*contact, *(null() for _ in delivery))
        return live, Contact.id
    query = (select(*contact, *delivery).join_from(Contact, Recipient, Recipient.contact_id == Contact.id)
             .where(Recipient.campaign_id == campaign.id))
    return query, Recipient.id


def list_recipients(
    session: Session, campaign: Campaign, *, page: int = 1, per_page: int = 15, search: str | None = None
) -> tuple[list[dict[str, Any]], int]:
    """One page of recipients in the seed's shape plus ``delivery``, and the total."""
    query, key = _recipients(session, campaign, (Contact,), (Recipient,))
    query = _search(query, search)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    pairs = session.execute(query.order_by(key).offset((page - 1) * per_page).limit(per_page)).all()
    user_ids = {c.user_id for c, _ in pairs if c.user_id is not None}
    users = {u.id: u for u in session.scalars(select(User).where(User.id.in_(user_ids)))} if user_ids else {}
    items = []
    for contact, ledger in pairs:
        item = contact_to_seed(contact, users.get(contact.user_id))
        item["delivery"] = _delivery(ledger)
        items.append(item)
    return items, total


def iter_recipients(session: Session, campaign: Campaign, columns: Sequence[Any],
                    page_size: int = 1000) -> Iterator[tuple[Any, ...]]:
    """Every recipient as a tuple of ``columns`` (of ``Contact``) followed by its delivery status,
    reason and time (None, None, None before dispatch), in keyset pages.

    The order and the set are exactly those of ``list_recipients``. Plain rows, not ORM objects:
    an export reads every recipient of a campaign, and building objects took a quarter of its time.
    """
    query, key = _recipients(session, campaign, columns, (Recipient.status, Recipient.reason, Recipient.updated_at))
    query = query.add_columns(key)  # the keyset: the last row's key starts the next page
    last = None
    while True:
        page_query = query.order_by(key).limit(page_size)
        if last is not None:
            page_query = page_query.where(key > last)
        page = session.execute(page_query).all()
        if not page:
            return
        last = page[-1][-1]
        for row in page:
            yield tuple(row)[:-1]
