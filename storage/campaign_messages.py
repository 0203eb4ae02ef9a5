"""The content actually sent to each contact (seed: GET /campaigns/:id/messages/:message_id).

Each message is kept in its recipient's ledger row, compressed (``storage.archive``); a message's
id is that row's id, and its times are when it was recorded as sent.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from storage.archive import dictionary_for, unpack
from storage.errors import NotFound
from storage.models import Campaign, Recipient, Template
from storage.timefmt import fmt

_COLUMNS = (Recipient.id, Recipient.campaign_id, Recipient.contact_id, Recipient.content, Recipient.updated_at)


def campaign_dictionary(session: Session, campaign: Campaign, sample: str | None = None) -> bytes:
    """The dictionary a campaign's archived contents are compressed with: its subject, content and
    template's content (what every message repeats), and ``sample``, a rendering of it with no
    personal data, when there is one (what the renderer adds: footers, links; stored messages of
    the email benchmark: ~230 bytes from the sources alone, ~50 with the sample)."""
    message = campaign.message or {}
    template = session.get(Template, campaign.template_id) if campaign.template_id else None
    return dictionary_for(message.get("subject"), message.get("content"), template.content if template else None,
                          sample)


def _dictionary(session: Session, campaign_id: str) -> bytes | None:
    return session.scalar(select(Campaign.archive_dictionary).where(Campaign.id == campaign_id))


def message_to_seed(row: Row, dictionary: bytes | None) -> dict[str, Any]:
    """The seed's message shape, from a row of ``_COLUMNS`` and its campaign's dictionary."""
    at = fmt(row.updated_at)
    return {"id": row.id, "campaign_id": row.campaign_id, "contact_id": row.contact_id,
            "content": unpack(row.content, dictionary), "created_at": at, "updated_at": at}


def list_messages(session: Session, campaign_id: str, *, page: int, per_page: int) -> tuple[list[dict[str, Any]], int]:
    """One page of a campaign's messages in the seed's shape, oldest first, and their total."""
    archived = (Recipient.campaign_id == campaign_id, Recipient.content.is_not(None))
    total = session.scalar(select(func.count()).where(*archived)) or 0
    rows = session.execute(select(*_COLUMNS).where(*archived).order_by(Recipient.id)
                           .offset((page - 1) * per_page).limit(per_page)).all()
    dictionary = _dictionary(session, campaign_id) if rows else None
    return [message_to_seed(row, dictionary) for row in rows], total


def get_message(session: Session, campaign_id: str, message_id: int) -> dict[str, Any]:
    """One message of the campaign in the seed's shape, or NotFound."""
    row = session.execute(select(*_COLUMNS).where(Recipient.id == message_id, Recipient.campaign_id == campaign_id,
                                                  Recipient.content.is_not(None))).first()
    if row is None:
        raise NotFound(f"message {message_id} of campaign {campaign_id} not found")
    return message_to_seed(row, _dictionary(session, campaign_id))
