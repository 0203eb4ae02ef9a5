"""Tasks: follow-up tasks of a campaign with a ``task`` (a telephone campaign's delivery), dealt at finalise.

Assignment is derived from the ledger, not from a counter: the recipients a campaign reached,
in ledger order, are dealt round-robin over ``distribute_users``. The same ledger always gives the
same assignment, so a crash, a restart or a message delivered twice can only recreate identical
tasks (unique per campaign and contact), and per-user counts differ by at most one.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.db import dialect_insert
from storage.models import Campaign, Contact, Recipient, Task
from storage.statuses import RecipientStatus
from storage.timefmt import parse as parse_time

log = structlog.get_logger()
CHUNK = 1000


def assignments(strategy: str, users: list[int], rows: Iterator[tuple[str, int | None]]) -> Iterator[tuple[str, int]]:
    """(contact id, user id) for each reached recipient, in ledger order.

    ``distribute``: round-robin over ``users`` in the given order. ``responsible_user``: the contact's
    own user when listed, the others round-robin.
    """
    listed = set(users)
    turn = 0
    for contact_id, own_user in rows:
        if strategy == "responsible_user" and own_user in listed:
            yield contact_id, own_user
            continue
        yield contact_id, users[turn % len(users)]
        turn += 1


def deal_tasks(session: Session, campaign: Campaign, now: datetime) -> int:
    """Create the campaign's tasks for every recipient it reached (idempotent); return how many exist."""
    task = campaign.task or {}
    users = list(task.get("distribute_users") or [])
    if not users:
        return 0
    rows = session.execute(
        select(Recipient.contact_id, Contact.user_id).join(Contact, Contact.id == Recipient.contact_id)
        .where(Recipient.campaign_id == campaign.id, Recipient.status == RecipientStatus.SENT).order_by(Recipient.id)
        .execution_options(yield_per=CHUNK)).tuples()
    start = parse_time(task["start_at"]) if task.get("start_at") else None
    end = parse_time(task["end_at"]) if task.get("end_at") else None
    statement = dialect_insert(session, Task).on_conflict_do_nothing(index_elements=["campaign_id", "contact_id"])
    chunk: list[dict] = []
    for contact_id, user_id in assignments(task.get("distribution_strategy") or "distribute", users, iter(rows)):
        chunk.append({"campaign_id": campaign.id, "contact_id": contact_id, "user_id": user_id,
                      "relations_path": task.get("relations_path"), "start_at": start, "end_at": end,
                      "created_at": now})
        if len(chunk) >= CHUNK:
            session.execute(statement, chunk)
            chunk = []
    if chunk:
        session.execute(statement, chunk)
    total = session.scalar(select(func.count()).where(Task.campaign_id == campaign.id)) or 0
    log.info("tasks.dealt", campaign_id=campaign.id, tasks=total, users=len(users))
    return total
