"""Rows to the seed API's JSON shapes (users, templates, pagination)."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlencode

from storage.models import Template, UserLike
from storage.timefmt import fmt


def user_to_seed(user: UserLike | None) -> dict[str, Any] | None:
    """A user object as the seed prints it (``campaign.user``, ``distribute_users``, ``contact.user``)."""
    if user is None:
        return None
    return {
        "id": user.id,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "phone_number": user.phone_number,
        "job_title": user.job_title,
        "email": user.email,
        "email_notifications": user.email_notifications,
        "profile_picture": user.profile_picture,
        "system_user": user.system_user,
        "created_at": fmt(user.created_at),
        "updated_at": fmt(user.updated_at),
    }


def template_to_seed(template: Template | None) -> dict[str, Any] | None:
    """A template reference as the seed prints it in a campaign (no content)."""
    if template is None:
        return None
    return {
        "id": template.id,
        "type": template.type,
        "company_id": template.company_id,
        "title": template.title,
        "user_id": template.user_id,
    }


def pagination(total: int, page: int, per_page: int, path: str, query: dict[str, Any] | None = None,
               base_url: str = "") -> dict:
    """The seed's pagination object. ``urls`` are ``base_url`` + ``path`` + the query
    (``/campaigns?page=2&per_page=15`` with no ``base_url``, as the CLI prints them; the HTTP API
    passes its own address so they are absolute). Empty query values are left out, the others are
    URL-encoded (a search ``a&b`` stays one value)."""
    last = max(1, math.ceil(total / per_page)) if per_page else 1
    extra = {k: v for k, v in (query or {}).items() if v not in (None, "")}
    prefix = f"{base_url.rstrip('/')}{path}"

    def url(n: int) -> str:
        # Commas stay as they are: legal in a query, and `teams=1,2` reads as it was given.
        return f"{prefix}?{urlencode({'page': n, 'per_page': per_page, **extra}, safe=',')}"

    return {
        "total": total,
        "page": page,
        "per_page": per_page,
        "urls": {
            "previous": url(page - 1) if page > 1 else None,
            "next": url(page + 1) if page < last else None,
        },
    }
