"""``/campaigns/settings``: the sending domain and consent (unsubscribe) configuration."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from storage.errors import ValidationFailed
from storage.models import CampaignSettings
from storage.timefmt import now

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def get_settings(session: Session) -> CampaignSettings:
    """The settings row (an empty one when nothing was set yet; not added to the session)."""
    return session.get(CampaignSettings, 1) or CampaignSettings(id=1, consent_custom=False)


def _http_url(value: Any) -> bool:
    if not isinstance(value, str) or "\r" in value or "\n" in value or " " in value:
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _domain(value: str) -> str:
    # The seed's PUT response shows "https://easir.com": accept a URL and keep its host.
    host = urlsplit(value).hostname if "://" in value else value
    return (host or "").lower().rstrip(".")


def apply_settings(session: Session, payload: Any, where: str = "") -> CampaignSettings:
    """Validate and store settings (PUT semantics for the keys given); errors name ``where.field``."""
    prefix = f"{where}." if where else ""
    errors: dict[str, list[str]] = {}
    if not isinstance(payload, dict):
        raise ValidationFailed({where or "settings": ["The settings must be a JSON object."]})
    row = session.get(CampaignSettings, 1) or CampaignSettings(id=1, consent_custom=False)
    if "domain" in payload:
        value = payload["domain"]
        if value in (None, ""):
            row.domain = None
        elif not isinstance(value, str) or not DOMAIN_RE.match(_domain(value)):
            errors[prefix + "domain"] = ["The domain must be a domain name like example.com."]
        else:
            row.domain = _domain(value)
    if "domain_slug" in payload:
        value = payload["domain_slug"]
        if value in (None, ""):
            row.domain_slug = None
        elif not isinstance(value, str) or not SLUG_RE.match(value):
            errors[prefix + "domain_slug"] = ["The domain_slug may contain only lower-case letters, digits and "
                                              "hyphens (a DNS label)."]
        else:
            row.domain_slug = value
    consent = payload.get("consent")
    if consent is not None:
        if not isinstance(consent, dict):
            errors[prefix + "consent"] = ["The consent must be an object."]
        else:
            key = "custom" if "custom" in consent else "enable"
            custom = consent.get(key, row.consent_custom)
            url = consent.get("unsubscribe_url", row.unsubscribe_url)
            if not isinstance(custom, bool):
                errors[f"{prefix}consent.{key}"] = [f"The consent.{key} field must be true or false."]
            elif custom and url in (None, ""):
                errors[prefix + "consent.unsubscribe_url"] = [
                    "The consent.unsubscribe_url field is required when consent.custom is true."]
            elif url not in (None, "") and not _http_url(url):
                errors[prefix + "consent.unsubscribe_url"] = ["The consent.unsubscribe_url must be an http(s) URL."]
            else:
                row.consent_custom = custom
                row.unsubscribe_url = url or None
    if errors:
        raise ValidationFailed(errors)
    row.updated_at = now()
    session.merge(row)
    session.flush()
    return session.get(CampaignSettings, 1)


def settings_to_seed(row: CampaignSettings, domain_slug_suffix: str) -> dict[str, Any]:
    """The seed's GET shape."""
    return {
        "domain": row.domain,
        "domain_slug": row.domain_slug,
        "domain_slug_suffix": domain_slug_suffix,
        "consent": {"enable": bool(row.consent_custom), "unsubscribe_url": row.unsubscribe_url},
    }
