"""Who an email is from (CONTRACT section 4, "Sender")."""

from __future__ import annotations

from dataclasses import dataclass

from storage.addresses import domain_of, is_email
from storage.models import CampaignSettings


@dataclass(frozen=True)
class Sender:
    """From, Reply-To and the domain Message-IDs are made under."""

    from_addr: str
    reply_to: str | None
    domain: str


class NoSendingDomain(ValueError):
    """Neither ``domain`` nor ``domain_slug`` is set in the campaign settings."""


class UnusableSender(ValueError):
    """The sender's From or Reply-To cannot stand in an email header (every email would fail)."""


def sender_for(settings: CampaignSettings | None, message_sender: str | None, domain_suffix: str) -> Sender:
    """With a custom domain, From is the campaign's sender when it is at that domain, else
    ``noreply@<domain>``; without one, From is ``noreply@<slug>.<suffix>``. Whenever From is not
    the campaign's sender, the sender becomes Reply-To so answers still reach a person."""
    sender = message_sender if message_sender and is_email(message_sender) else None
    if settings is not None and settings.domain:
        domain = settings.domain.lower()
        if sender and domain_of(sender) == domain:
            return Sender(sender, None, domain)
        return Sender(f"noreply@{domain}", sender, domain)
    if settings is not None and settings.domain_slug:
        domain = f"{settings.domain_slug}.{domain_suffix}".lower()
        return Sender(f"noreply@{domain}", sender, domain)
    raise NoSendingDomain("no sending domain: set domain or domain_slug with `campaign-dispatch settings set`")
