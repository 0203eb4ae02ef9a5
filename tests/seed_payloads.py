"""The seed documentation's example payloads, with dates moved into the future."""

from __future__ import annotations

import copy
from datetime import timedelta

from storage.timefmt import fmt, now

RELATIONS_PATH = "9eae431b-3d0f-4528-9c59-e9d1a40fcd04"


def future(days: int = 30, seconds: int = 0) -> str:
    return fmt(now() + timedelta(days=days, seconds=seconds))


def create_payload() -> dict:
    """POST /campaigns example payload."""
    return {
        "name": "My campaign",
        "description": "Some text to describe this campaign",
        "approved": True,
        "type": "email",
        "message": {"content": "This is my content", "subject": "This is my subject", "sender": "example@easir.com"},
        "filter": [{"field": "contact.fixed_fields.last_name", "operator": "ct", "value": "e"}],
        "template_id": 2,
        "send_at": future(),
        "task": {
            "distribution_strategy": "responsible_user",
            "distribute_users": [4, 10, 34],
            "relations_path": RELATIONS_PATH,
            "start_at": future(seconds=1),
            "end_at": future(seconds=2),
        },
    }


def update_payload() -> dict:
    """PUT /campaigns/:id example payload (the seed uses the same body)."""
    return copy.deepcopy(create_payload())


def settings_payload() -> dict:
    """PUT /campaigns/settings example payload (the seed's has a trailing comma; fixed here)."""
    return {"domain_slug": "easir", "consent": {"enable": True, "unsubscribe_url": "https://easir.com/unsubscribe"}}
