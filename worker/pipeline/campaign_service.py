"""Campaign use cases: the seed's rules (storage) plus template compilation (renderers), in one place."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy.orm import Session

from renderers.context import check_template
from storage import campaigns as repo
from storage.errors import ValidationFailed
from storage.fields import FIXED_FIELD_NAMES
from storage.filters import parse_filters
from storage.ids import is_int_id
from storage.lifecycle import ensure_editable
from storage.models import Campaign, CampaignSettings, Template, User
from storage.timefmt import now as utcnow
from storage.validation import CampaignInput, check_campaign


def template_errors(message: dict | None, template: Template | None) -> dict[str, list[str]]:
    """Problems in the message content, subject and wrapper template: compile, known variables, and
    one render of each against an empty sample contact in the sandbox and under the limits every
    recipient's render has (attributes, range(), loop steps, output size, time)."""
    errors: dict[str, list[str]] = {}
    sources = []
    if message:
        sources += [("message.content", message.get("content"), False, False),
                    ("message.subject", message.get("subject"), False, True)]
    if template is not None:
        sources.append(("template_id", template.content or "", True, False))
    for field, source, is_wrapper, subject in sources:
        if source:
            problems = check_template(source, fixed_fields=FIXED_FIELD_NAMES, is_wrapper=is_wrapper,
                                      subject=subject)
            if problems:
                errors[field] = [f"The template cannot be used: {p}" for p in problems]
    return errors


def campaign_problems(session: Session, campaign: Campaign) -> list[str]:
    """Why a stored campaign cannot be sent now (checked again at dispatch), as sentences."""
    problems: list[str] = []
    settings = session.get(CampaignSettings, 1)
    if campaign.type == "email" and (settings is None or not (settings.domain or settings.domain_slug)):
        problems.append("no sending domain is set: set domain or domain_slug in the campaign settings")
    try:
        parse_filters(campaign.filter or [])
    except ValidationFailed as exc:
        problems += [f"{field}: {'; '.join(reasons)}" for field, reasons in exc.errors.items()]
    template = session.get(Template, campaign.template_id) if campaign.template_id else None
    if campaign.template_id and template is None:
        problems.append(f"template {campaign.template_id} no longer exists")
    if campaign.type in ("email", "letter") and not (campaign.message or {}).get("content"):
        problems.append("message.content is empty")
    if campaign.type == "telephone" and not campaign.task:  # a copy has none until it is updated with one
        problems.append("task: a telephone campaign needs a task: update the campaign with one")
    for field, reasons in template_errors(campaign.message, template).items():
        problems += [f"{field}: {r}" for r in reasons]
    return problems


def validated(session: Session, payload: Any, mode: Literal["create", "update"]) -> CampaignInput:
    """Validate a payload completely or raise ValidationFailed with every problem found."""
    data, errors = check_campaign(payload, session, now=utcnow(), mode=mode)
    if data is not None:
        errors = template_errors(data.message, data.template)
    if errors or data is None:
        raise ValidationFailed(errors)
    return data


def create(session: Session, payload: Any, user_id: int) -> Campaign:
    """POST /campaigns."""
    user = session.get(User, user_id) if is_int_id(user_id) else None
    if user is None:
        # Validate the payload too, so one run reports everything.
        try:
            validated(session, payload, "create")
        except ValidationFailed as exc:
            raise ValidationFailed({"user": [f"Unknown user {user_id}."], **exc.errors}) from None
        raise ValidationFailed({"user": [f"Unknown user {user_id}."]})
    return repo.create_campaign(session, validated(session, payload, "create"), user, utcnow())


def update(session: Session, campaign_id: str, payload: Any) -> Campaign:
    """PUT /campaigns/:id (refused once the campaign is sent)."""
    campaign = repo.get_campaign(session, campaign_id, for_update=True)
    ensure_editable(campaign, "updated")
    return repo.update_campaign(session, campaign, validated(session, payload, "update"), utcnow())
