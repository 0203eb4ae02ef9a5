"""``campaigns recipients``: the contacts a campaign selects, each with its delivery state."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from storage.contacts import contact_to_seed
from storage.filter_sql import compile_filters
from storage.filters import parse_filters
from storage.models import Campaign, Contact, Recipient, User
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
        return {"status": "pending", "reason": None, "at": None}
    return {"status": row.status, "reason": row.reason, "at": fmt(row.updated_at)}


def list_recipients(
    session: Session, campaign: Campaign, *, page: int = 1, per_page: int = 15, search: str | None = None
) -> tuple[list[dict[str, Any]], int]:
    """One page of recipients in the seed's shape plus ``delivery``, and the total.

    Before dispatch the filter is evaluated live; once dispatched the ledger is the list (the set
    the campaign actually took), so later contact edits do not change who was a recipient.
    """
    if campaign.dispatched_at is None:
        query = _search(selected_contacts(session, campaign), search)
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        contacts = session.scalars(query.order_by(Contact.id).offset((page - 1) * per_page).limit(per_page)).all()
        pairs = [(c, None) for c in contacts]
    else:
        query = _search(
            select(Contact, Recipient).join(Recipient, Recipient.contact_id == Contact.id)
            .where(Recipient.campaign_id == campaign.id), search)
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        pairs = session.execute(query.order_by(Recipient.id).offset((page - 1) * per_page).limit(per_page)).all()
    user_ids = {c.user_id for c, _ in pairs if c.user_id is not None}
    users = {u.id: u for u in session.scalars(select(User).where(User.id.in_(user_ids)))} if user_ids else {}
    items = []
    for contact, ledger in pairs:
        item = contact_to_seed(contact, users.get(contact.user_id))
        item["delivery"] = _delivery(ledger)
        items.append(item)
    return items, total


def iter_recipients(session: Session, campaign: Campaign, page_size: int = 1000):
    """Every recipient as (contact, ledger row or None), in the listing's order, in keyset pages.

    Memory holds one page; the order and the set are exactly those of ``list_recipients``.
    """
    last = None
    while True:
        if campaign.dispatched_at is None:
            query = selected_contacts(session, campaign).order_by(Contact.id).limit(page_size)
            if last is not None:
                query = query.where(Contact.id > last)
            page = [(c, None) for c in session.scalars(query)]
            last = page[-1][0].id if page else None
        else:
            query = (select(Contact, Recipient).join(Recipient, Recipient.contact_id == Contact.id)
                     .where(Recipient.campaign_id == campaign.id).order_by(Recipient.id).limit(page_size))
            if last is not None:
                query = query.where(Recipient.id > last)
            page = [tuple(row) for row in session.execute(query)]
            last = page[-1][1].id if page else None
        if not page:
            return
        yield from page
        session.expunge_all()  # keep the identity map from growing with the export
