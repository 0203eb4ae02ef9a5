"""Create/update payload validation, literally after the seed's parameter lists (CONTRACT section 4).

``check_campaign`` collects every problem as ``{"dotted.field": [reasons]}`` instead of stopping at the
first, so a user fixes a payload in one go. Template compilation is checked by the caller (renderers),
which merges its findings into the same error map.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.ids import is_int_id
from storage.addresses import is_email
from storage.errors import ValidationFailed
from storage.filters import FilterTree, parse_filters
from storage.models import CampaignSettings, RelationsPath, Template, User
from storage.timefmt import parse as parse_time

TYPES = ("email", "letter", "telephone")
STRATEGIES = ("distribute", "responsible_user")


@dataclass
class CampaignInput:
    """A payload that passed validation, in typed form."""

    name: str
    description: str | None
    approved: bool
    type: str
    message: dict[str, str] | None
    filter: list[Any]
    filter_tree: FilterTree | None
    template: Template | None
    send_at: datetime | None
    execute_now: bool
    task: dict[str, Any] | None


class _Errors(dict):
    def add(self, field: str, reason: str) -> None:
        self.setdefault(field, []).append(reason)


def _required(field: str) -> str:
    return f"The {field} field is required."


def _has_crlf(value: str) -> bool:
    return "\r" in value or "\n" in value


def check_campaign(
    payload: Any, session: Session, *, now: datetime, mode: Literal["create", "update"]
) -> tuple[CampaignInput | None, dict[str, list[str]]]:
    """Validate a create/update payload; return the typed input (None when invalid) and the errors."""
    errors = _Errors()
    if not isinstance(payload, dict):
        errors.add("payload", "The payload must be a JSON object.")
        return None, errors

    settings = session.get(CampaignSettings, 1)
    if mode == "create" and (settings is None or not (settings.domain or settings.domain_slug)):
        errors.add("domain", "A campaign domain (domain or domain_slug) must be set in the campaign settings "
                             "before a campaign can be created.")

    name = payload.get("name")
    if name is None or (isinstance(name, str) and not name.strip()):
        errors.add("name", _required("name"))
    elif not isinstance(name, str):
        errors.add("name", "The name must be a string.")
    elif len(name) > 255:
        errors.add("name", "The name may not be greater than 255 characters.")

    description = payload.get("description")
    if description is not None and not isinstance(description, str):
        errors.add("description", "The description must be a string.")

    approved = payload.get("approved", True)
    if not isinstance(approved, bool):
        errors.add("approved", "The approved field must be true or false.")
        approved = True

    ctype = payload.get("type")
    if ctype is None:
        errors.add("type", _required("type"))
    elif ctype not in TYPES:
        errors.add("type", "The type must be one of email, letter, telephone.")

    execute_now = payload.get("execute_now", False) if mode == "create" else False
    if not isinstance(execute_now, bool):
        errors.add("execute_now", "The execute_now field must be true or false.")
        execute_now = False

    message = _check_message(payload, approved, ctype, errors)
    filter_raw, filter_tree = _check_filter(payload, approved, errors)
    template = _check_template(payload, ctype, session, errors)
    send_at = _check_send_at(payload, approved, execute_now, now, errors)
    task = _check_task(payload, ctype, send_at or (now if execute_now else None), session, errors)

    if errors:
        return None, dict(errors)
    return CampaignInput(
        name=name, description=description, approved=approved, type=ctype, message=message,
        filter=filter_raw, filter_tree=filter_tree, template=template, send_at=send_at,
        execute_now=execute_now, task=task,
    ), {}


def _check_message(payload: dict, approved: bool, ctype: Any, errors: _Errors) -> dict[str, str] | None:
    message = payload.get("message")
    needed = (not approved) or ctype in ("email", "letter")
    if message is None:
        if needed:
            errors.add("message", _required("message"))
        return None
    if not isinstance(message, dict):
        errors.add("message", "The message must be an object.")
        return None
    rules = {
        "content": needed,
        "subject": (not approved) or ctype == "email",
        "sender": (not approved) or ctype == "email",
    }
    clean: dict[str, str] = {}
    for key, required in rules.items():
        value = message.get(key)
        field = f"message.{key}"
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                errors.add(field, _required(field))
            continue
        if not isinstance(value, str):
            errors.add(field, f"The {field} must be a string.")
            continue
        if key in ("subject", "sender") and _has_crlf(value):
            errors.add(field, f"The {field} may not contain line breaks.")
            continue
        if key == "sender" and not is_email(value):
            errors.add(field, f"The {field} must be a valid email address.")
            continue
        clean[key] = value
    return clean


def _check_filter(payload: dict, approved: bool, errors: _Errors) -> tuple[list, FilterTree | None]:
    raw = payload.get("filter")
    if raw is None:
        if approved:
            errors.add("filter", _required("filter") + " (when approved is true)")
        return [], None
    try:
        return raw, parse_filters(raw)
    except ValidationFailed as exc:
        for field, reasons in exc.errors.items():
            for reason in reasons:
                errors.add(field, reason)
        return raw, None


def _check_template(payload: dict, ctype: Any, session: Session, errors: _Errors) -> Template | None:
    template_id = payload.get("template_id")
    if template_id is None:
        return None
    if not is_int_id(template_id):
        errors.add("template_id", "The template_id must be an integer id.")
        return None
    template = session.get(Template, template_id)
    if template is None:
        errors.add("template_id", f"The selected template_id {template_id} is invalid: no such template.")
        return None
    if ctype in TYPES and template.type != ctype:
        errors.add("template_id", f"The template type ({template.type}) must match the campaign type ({ctype}).")
        return None
    return template


def _time(value: Any, field: str, errors: _Errors) -> datetime | None:
    if not isinstance(value, str):
        errors.add(field, f"The {field} must be a date in Y-m-d H:i:s format.")
        return None
    try:
        return parse_time(value)
    except ValueError:
        errors.add(field, f"The {field} does not match the format Y-m-d H:i:s.")
        return None


def _check_send_at(payload: dict, approved: bool, execute_now: bool, now: datetime, errors: _Errors) -> datetime | None:
    raw = payload.get("send_at")
    if raw is None:
        if approved and not execute_now:
            errors.add("send_at", _required("send_at") + " (when approved is true and execute_now is not set)")
        return None
    send_at = _time(raw, "send_at", errors)
    if send_at is not None and send_at <= now:
        errors.add("send_at", "The send_at must be a date after now.")
        return None
    return send_at


def _check_task(payload: dict, ctype: Any, after: datetime | None, session: Session, errors: _Errors) -> dict | None:
    task = payload.get("task")
    if task is None:
        if ctype == "telephone":
            errors.add("task", "The task field is required when type is telephone.")
        return None
    if not isinstance(task, dict):
        errors.add("task", "The task must be an object.")
        return None
    for key in ("distribution_strategy", "distribute_users", "relations_path", "start_at", "end_at"):
        if task.get(key) is None:
            errors.add(f"task.{key}", _required(f"task.{key}"))

    strategy = task.get("distribution_strategy")
    if strategy is not None and strategy not in STRATEGIES:
        errors.add("task.distribution_strategy", "The task.distribution_strategy must be distribute or responsible_user.")

    users = task.get("distribute_users")
    user_ids: list[int] = []
    if users is not None:
        if not isinstance(users, list) or not users:
            errors.add("task.distribute_users", "The task.distribute_users must be a non-empty list of user ids.")
        else:
            positions: dict[int, int] = {}
            for i, uid in enumerate(users):
                if isinstance(uid, dict):  # the seed prints users as objects; accept them back
                    uid = uid.get("id")
                if not is_int_id(uid):
                    errors.add(f"task.distribute_users.{i}", "Each distribute user must be a user id (integer).")
                elif uid in positions:
                    errors.add(f"task.distribute_users.{i}", f"User {uid} is listed twice.")
                else:
                    positions[uid] = i
            user_ids = list(positions)
            known = set(session.scalars(select(User.id).where(User.id.in_(user_ids)))) if user_ids else set()
            for uid, i in positions.items():
                if uid not in known:
                    errors.add(f"task.distribute_users.{i}", f"Unknown user {uid}.")

    path = task.get("relations_path")
    if path is not None:
        try:
            path = str(uuid.UUID(str(path))) if isinstance(path, str) else None
        except ValueError:
            path = None
        if path is None:
            errors.add("task.relations_path", "The task.relations_path must be a valid UUID.")
        elif session.get(RelationsPath, path) is None:
            errors.add("task.relations_path", "The selected task.relations_path is invalid: no such relations path.")

    start = _time(task["start_at"], "task.start_at", errors) if task.get("start_at") is not None else None
    end = _time(task["end_at"], "task.end_at", errors) if task.get("end_at") is not None else None
    if start is not None and after is not None and start <= after:
        errors.add("task.start_at", "The task.start_at must be a date after send_at.")
    if start is not None and end is not None and end <= start:
        errors.add("task.end_at", "The task.end_at must be a date after task.start_at.")
    return {
        "distribution_strategy": strategy,
        "distribute_users": user_ids,
        "relations_path": path,
        "start_at": task.get("start_at"),
        "end_at": task.get("end_at"),
    }


def raise_if(errors: dict[str, list[str]]) -> None:
    """Raise ValidationFailed when ``errors`` is not empty."""
    if errors:
        raise ValidationFailed(errors)
