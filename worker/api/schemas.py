"""OpenAPI documentation of the seed's shapes.

Request bodies are documented with these models but validated by the service (storage's rules, the
same as the CLI's), so every field accepts any JSON value here and a wrong one gets the service's
422 naming the dotted field, not a second set of rules with other words.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TIME = "Y-m-d H:i:s, UTC (e.g. 2026-11-30 09:00:00)"


def doc(schema: dict[str, Any], description: str = "") -> Any:
    """A field that accepts any JSON value but is documented as ``schema``."""
    return Field(None, description=description or None, json_schema_extra=schema)


STRING, NULLABLE_STRING = {"type": "string"}, {"type": ["string", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}


class Open(BaseModel):
    """Shapes that may carry more keys than documented."""

    model_config = ConfigDict(extra="allow")


class Message(Open):
    message: str


class Invalid(Open):
    message: str
    errors: dict[str, list[str]]


class User(Open):
    id: int
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None


class Progress(Open):
    total: int
    sent: int
    failed: int
    skipped: int
    pending: int


class Campaign(Open):
    id: str
    user: User | None = None
    name: str
    type: str
    approved: bool | None = None
    description: str | None = None
    message: dict[str, Any] | None = None
    template: dict[str, Any] | None = None
    filter: list[Any] | None = None
    send_at: str | None = Field(None, description=TIME)
    sent_at: str | None = None
    total_sent: int | None = None
    task: dict[str, Any] | None = None
    status: str
    progress: Progress | None = None
    error: str | None = None


class CampaignUpdated(Open):
    id: str
    name: str
    type: str
    status: str


class Urls(BaseModel):
    previous: str | None
    next: str | None


class Pagination(BaseModel):
    total: int
    page: int
    per_page: int
    urls: Urls


class CampaignPage(Open):
    data: list[Campaign]
    pagination: Pagination


class Recipient(Open):
    id: str
    delivery: dict[str, Any]


class RecipientPage(Open):
    data: list[Recipient]
    pagination: Pagination


class CampaignMessage(Open):
    id: int
    campaign_id: str
    contact_id: str
    content: str | None = None


class MessagePage(Open):
    data: list[CampaignMessage]
    pagination: Pagination


class Url(Open):
    url: str


class FileUrl(Open):
    id: str
    url: str


class DownloadUrl(Open):
    download_url: str


class EmailQueued(Open):
    email: str


class ExportState(Open):
    export_id: str
    file_id: str | None
    status: str


class Tasks(Open):
    data: list[dict[str, Any]]


class Settings(Open):
    domain: str | None = None
    domain_slug: str | None = None
    domain_slug_suffix: str | None = None
    consent: dict[str, Any] | None = None


class Health(Open):
    database: str
    broker: str


class CampaignIn(Open):
    """POST /campaigns, PUT /campaigns/{id}, POST /campaigns/preview and /campaigns/test-email."""

    name: Any = doc(STRING, "Required.")
    description: Any = doc(NULLABLE_STRING)
    approved: Any = doc({"type": "boolean"}, "Default true.")
    type: Any = doc({"type": "string", "enum": ["email", "letter", "telephone"]}, "Required.")
    message: Any = doc({"type": "object", "properties": {"content": STRING, "subject": STRING, "sender": STRING}},
                       "Required for email and letter campaigns, and when approved is false.")
    filter: Any = doc({"type": "array", "items": {"type": "object"}},
                      "Filters (field, operator, value; groups with or/filters; not). Required when approved.")
    template_id: Any = doc(NULLABLE_INT, "A template of the campaign's type.")
    execute_now: Any = doc({"type": "boolean"}, "Send now (approved campaigns).")
    send_at: Any = doc(NULLABLE_STRING, f"{TIME}; after now. Required when approved, unless execute_now.")
    task: Any = doc({"type": ["object", "null"], "properties": {
        "distribution_strategy": {"type": "string", "enum": ["distribute", "responsible_user"]},
        "distribute_users": {"type": "array", "items": {"type": "integer"}},
        "relations_path": STRING, "start_at": STRING, "end_at": STRING}},
        "Follow-up tasks; required for telephone campaigns.")
    email: Any = doc(STRING, "Test email only: where to send it (default: the token's user).")


class SettingsIn(Open):
    domain: Any = doc(NULLABLE_STRING, "A custom sending domain.")
    domain_slug: Any = doc(NULLABLE_STRING, "Send from noreply@<domain_slug>.<suffix> when no domain is set.")
    consent: Any = doc({"type": "object", "properties": {"custom": {"type": "boolean"}, "enable": {"type": "boolean"},
                                                         "unsubscribe_url": NULLABLE_STRING}})


class TestEmailIn(Open):
    email: Any = doc(STRING, "Required: where to send the test.")
