"""The content actually sent to each contact (seed: GET /campaigns/:id/messages/:message_id)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.errors import NotFound
from storage.models import CampaignMessage
from storage.timefmt import fmt


def message_to_seed(message: CampaignMessage) -> dict[str, Any]:
    """The seed's message shape."""
    return {"id": message.id, "campaign_id": message.campaign_id, "contact_id": message.contact_id,
            "content": message.content, "created_at": fmt(message.created_at), "updated_at": fmt(message.updated_at)}


def list_messages(session: Session, campaign_id: str, *, page: int, per_page: int) -> tuple[list[CampaignMessage], int]:
    """One page of a campaign's messages, oldest first, and their total."""
    total = session.scalar(select(func.count()).where(CampaignMessage.campaign_id == campaign_id)) or 0
    rows = session.scalars(select(CampaignMessage).where(CampaignMessage.campaign_id == campaign_id)
                           .order_by(CampaignMessage.id).offset((page - 1) * per_page).limit(per_page)).all()
    return list(rows), total


def get_message(session: Session, campaign_id: str, message_id: int) -> CampaignMessage:
    """One message of the campaign, or NotFound."""
    message = session.get(CampaignMessage, message_id)
    if message is None or message.campaign_id != campaign_id:
        raise NotFound(f"message {message_id} of campaign {campaign_id} not found")
    return message
