"""The campaign repository: create, update, copy, delete, list, and the seed's JSON shapes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, case, delete, func, or_, select, true
from sqlalchemy.orm import Session

from storage.errors import NotFound
from storage.models import Campaign, Recipient, Template, User
from storage.statuses import CampaignStatus, RecipientStatus
from storage.serialize import template_to_seed, user_to_seed
from storage.timefmt import fmt

if TYPE_CHECKING:
    from storage.validation import CampaignInput


def _key(campaign_id: str) -> str:
    """The id in its stored form; NotFound for an id that is no UUID."""
    try:
        return str(uuid.UUID(str(campaign_id)))
    except ValueError:
        raise NotFound(f"campaign {campaign_id} not found") from None


def get_campaign(session: Session, campaign_id: str, *, for_update: bool = False) -> Campaign:
    """The campaign with this id, or NotFound (also for ids that are not UUIDs)."""
    campaign = session.get(Campaign, _key(campaign_id), with_for_update=for_update)
    if campaign is None:
        raise NotFound(f"campaign {campaign_id} not found")
    return campaign


def _apply(campaign: Campaign, data: CampaignInput, now: datetime) -> None:
    from storage.lifecycle import initial_status  # here: reads (``campaigns show``) need no lifecycle

    campaign.name = data.name
    campaign.description = data.description
    campaign.approved = data.approved
    campaign.type = data.type
    campaign.message = data.message
    campaign.filter = data.filter
    campaign.template_id = data.template.id if data.template else None
    # execute_now: due at once; the scheduler (or a direct dispatch) takes it on its next look.
    campaign.send_at = now if data.execute_now and data.approved else data.send_at
    campaign.task = data.task
    campaign.status = initial_status(campaign.approved, campaign.send_at)
    campaign.updated_at = now


def create_campaign(session: Session, data: CampaignInput, user: User, now: datetime) -> Campaign:
    """Insert a validated campaign owned by ``user``."""
    campaign = Campaign(id=str(uuid.uuid4()), user_id=user.id, team_id=user.team_id, group_id=None,
                        scope="global", created_at=now)
    _apply(campaign, data, now)
    session.add(campaign)
    session.flush()
    return campaign


def update_campaign(session: Session, campaign: Campaign, data: CampaignInput, now: datetime) -> Campaign:
    """Replace a not-yet-sent campaign's fields (PUT semantics)."""
    from storage.lifecycle import ensure_editable  # here: reads (``campaigns show``) need no lifecycle

    ensure_editable(campaign, "updated")
    _apply(campaign, data, now)
    session.flush()
    return campaign


def copy_campaign(session: Session, campaign: Campaign, now: datetime) -> Campaign:
    """``"<name> - copy"`` with ``send_at`` and ``task`` cleared, as a draft."""
    copy = Campaign(
        id=str(uuid.uuid4()), user_id=campaign.user_id, team_id=campaign.team_id, group_id=campaign.group_id,
        scope=campaign.scope, name=f"{campaign.name} - copy"[:255], description=campaign.description,
        approved=campaign.approved, type=campaign.type, message=campaign.message,
        template_id=campaign.template_id, filter=campaign.filter, send_at=None, task=None,
        status=CampaignStatus.DRAFT, created_at=now, updated_at=now,
    )
    session.add(copy)
    session.flush()
    return copy


def delete_campaign(session: Session, campaign: Campaign) -> None:
    """Delete a not-yet-sent campaign."""
    from storage.lifecycle import ensure_editable  # here: reads (``campaigns show``) need no lifecycle

    ensure_editable(campaign, "deleted")
    # An editable campaign has no ledger rows; if one had, they go with it (the ledger keeps no
    # foreign key: see models.Recipient).
    session.execute(delete(Recipient).where(Recipient.campaign_id == campaign.id))
    session.delete(campaign)
    session.flush()


def list_campaigns(
    session: Session, *, status: str | None = None, type: str | None = None, teams: list[int] | None = None,
    search: str | None = None, page: int = 1, per_page: int = 15,
) -> tuple[list[Campaign], int]:
    """One page of campaigns, newest first, and the total that match."""
    query = select(Campaign)
    if status:
        query = query.where(Campaign.status == (CampaignStatus.COMPLETED if status == "sent" else status))
    if type:
        query = query.where(Campaign.type == type)
    if teams:
        query = query.where(Campaign.team_id.in_(teams))
    if search:
        pattern = search.lower()
        query = query.where(or_(func.lower(Campaign.name).contains(pattern, autoescape=True),
                                func.lower(Campaign.description).contains(pattern, autoescape=True)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(Campaign.created_at.desc(), Campaign.id).offset((page - 1) * per_page).limit(per_page)
    ).all()
    return list(rows), total


def progress_of(session: Session, campaign: Campaign) -> dict[str, int]:
    """Counts from the ledger: ``total`` = sent + failed + skipped + pending (``sending`` is pending)."""
    return progress_of_many(session, [campaign.id])[campaign.id]


def progress_of_many(session: Session, campaign_ids: list[str]) -> dict[str, dict[str, int]]:
    """``progress_of`` for several campaigns in one query."""
    counts: dict[str, dict[str, int]] = {cid: {} for cid in campaign_ids}
    if campaign_ids:
        for cid, status, n in session.execute(
                select(Recipient.campaign_id, Recipient.status, func.count())
                .where(Recipient.campaign_id.in_(campaign_ids)).group_by(Recipient.campaign_id, Recipient.status)):
            counts[cid][status] = n
    return {cid: _progress(c) for cid, c in counts.items()}


def _progress(counts: dict[str, int]) -> dict[str, int]:
    sent, failed, skipped = (counts.get(RecipientStatus.SENT, 0), counts.get(RecipientStatus.FAILED, 0),
                             counts.get(RecipientStatus.SKIPPED, 0))
    return _counted(sum(counts.values()), sent, failed, skipped)


def _counted(total: int, sent: int, failed: int, skipped: int) -> dict[str, int]:
    """Progress from the ledger's counts: what is neither sent, failed nor skipped is pending."""
    return {"total": total, "sent": sent, "failed": failed, "skipped": skipped,
            "pending": total - sent - failed - skipped}


def with_related(session: Session, campaigns: list[Campaign]) -> list[Any]:
    """Load the users and templates ``campaign_to_seed`` reads for these campaigns in two queries.
    The session's identity map keeps objects only while something refers to them: hold the
    returned list while serialising, and each ``session.get`` is answered without SQL."""
    user_ids = {c.user_id for c in campaigns if c.user_id is not None}
    template_ids = {c.template_id for c in campaigns if c.template_id is not None}
    held: list[Any] = []
    if user_ids:
        held += session.scalars(select(User).where(User.id.in_(user_ids))).all()
    if template_ids:
        held += session.scalars(select(Template).where(Template.id.in_(template_ids))).all()
    return held


# GET /campaigns/:id in one statement, built once (a reused statement object is compiled and its
# cache key computed once): the campaign with its user and template, and its ledger's counts from
# an aggregate subquery that always gives one row (zeros when the ledger is empty).
_COUNTS = (select(func.count().label("total"),
                  *(func.coalesce(func.sum(case((Recipient.status == status, 1), else_=0)), 0).label(status)
                    for status in (RecipientStatus.SENT, RecipientStatus.FAILED, RecipientStatus.SKIPPED)))
           .where(Recipient.campaign_id == bindparam("campaign_id")).subquery("counts"))
_SHOW = (select(Campaign, User, Template, *_COUNTS.c)
         .outerjoin(User, User.id == Campaign.user_id)
         .outerjoin(Template, Template.id == Campaign.template_id)
         .join(_COUNTS, true())
         .where(Campaign.id == bindparam("campaign_id")))


def get_campaign_for_show(session: Session, campaign_id: str) -> tuple[Campaign, dict[str, int], list[Any]]:
    """``get_campaign`` with its user and template and ``progress_of`` in one query; hold the list
    while serialising (the user and template stay in the session for ``campaign_to_seed``)."""
    row = session.execute(_SHOW, {"campaign_id": _key(campaign_id)}).first()
    if row is None:
        raise NotFound(f"campaign {campaign_id} not found")
    campaign, user, template, total, sent, failed, skipped = row
    return campaign, _counted(total, sent, failed, skipped), [user, template]


def stored_progress(campaign: Campaign) -> dict[str, int]:
    """The counters kept on the campaign row (cheap, for lists)."""
    done = campaign.sent + campaign.failed + campaign.skipped
    return {"total": campaign.total, "sent": campaign.sent, "failed": campaign.failed,
            "skipped": campaign.skipped, "pending": max(0, campaign.total - done)}


def _users(session: Session, ids: list[int]) -> list[User]:
    found = {u.id: u for u in session.scalars(select(User).where(User.id.in_(ids)))} if ids else {}
    return [found[i] for i in ids if i in found]


def _task_seed(session: Session, task: dict | None, *, users_as_objects: bool) -> dict | None:
    if task is None:
        return None
    users = task.get("distribute_users") or []
    return {
        "distribution_strategy": task.get("distribution_strategy"),
        "distribute_users": [user_to_seed(u) for u in _users(session, users)] if users_as_objects else list(users),
        "relations_path": task.get("relations_path"),
        "start_at": task.get("start_at"),
        "end_at": task.get("end_at"),
    }


def _lifecycle(campaign: Campaign, progress: dict[str, int]) -> dict[str, Any]:
    extra: dict[str, Any] = {"status": campaign.status, "progress": progress}
    if campaign.status == CampaignStatus.FAILED or campaign.error:
        extra["error"] = campaign.error
    return extra


def campaign_to_seed(session: Session, campaign: Campaign, progress: dict[str, int] | None = None) -> dict[str, Any]:
    """The seed's GET/201 campaign shape, plus ``status``, ``progress`` and (when failed) ``error``."""
    template = session.get(Template, campaign.template_id) if campaign.template_id else None
    return {
        "id": campaign.id,
        "user": user_to_seed(session.get(User, campaign.user_id)),
        "team_id": campaign.team_id,
        "group_id": campaign.group_id,
        "scope": campaign.scope,
        "name": campaign.name,
        "approved": campaign.approved,
        "description": campaign.description,
        "type": campaign.type,
        "message": dict(campaign.message) if campaign.message is not None else None,
        "template": template_to_seed(template),
        "filter": campaign.filter,
        "sent_at": fmt(campaign.sent_at),
        "total_sent": campaign.total_sent,
        "send_at": fmt(campaign.send_at),
        "task": _task_seed(session, campaign.task, users_as_objects=True),
        "created_at": fmt(campaign.created_at),
        "updated_at": fmt(campaign.updated_at),
        **_lifecycle(campaign, progress if progress is not None else stored_progress(campaign)),
    }


def campaign_update_shape(session: Session, campaign: Campaign) -> dict[str, Any]:
    """The seed's PUT response shape (``template_id``, user ids in the task), plus id and status."""
    message = dict(campaign.message) if campaign.message is not None else None
    return {
        "id": campaign.id,
        "team_id": campaign.team_id,
        "group_id": campaign.group_id,
        "scope": campaign.scope,
        "name": campaign.name,
        "description": campaign.description,
        "approved": campaign.approved,
        "type": campaign.type,
        "message": message,
        "filter": campaign.filter,
        "template_id": campaign.template_id,
        "send_at": fmt(campaign.send_at),
        "task": _task_seed(session, campaign.task, users_as_objects=False),
        "status": campaign.status,
    }
