"""Bearer tokens of the HTTP API: create (the secret is shown once), authenticate, list, revoke.

A token is ``cdt_`` followed by ``secrets.token_urlsafe(32)`` (256 random bits). Only the SHA-256
hex digest of the whole token is stored. A plain, fast hash is the right choice here: slow KDFs
(bcrypt, scrypt, Argon2) exist to make guessing low-entropy passwords expensive, and nobody can
enumerate 2**256 random secrets however fast the hash is. It also lets a request find its row by
the digest through the unique index instead of trying a KDF against every row.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, or_, select, update
from sqlalchemy.orm import Session

from storage.ids import is_int_id
from storage.errors import NotFound, ValidationFailed
from storage.models import ApiToken, User
from storage.timefmt import fmt

PREFIX = "cdt_"
# Longer than any token this module makes; anything longer is malformed and not even hashed.
MAX_LENGTH = 256
NAME_LENGTH = 255
# last_used_at is written at most this often per token, so a busy client does not write on every request.
TOUCH_EVERY = timedelta(minutes=1)


def hash_token(secret: str) -> str:
    """The SHA-256 hex digest of ``secret``: what is stored and looked up."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_token(session: Session, user_id: int, name: str | None, now: datetime) -> tuple[ApiToken, str]:
    """Create a token for ``user_id`` and return its row and its secret.

    The secret exists only in the return value: show it once, it cannot be recovered. An unknown
    user is a ValidationFailed naming ``user``; a name longer than 255 characters one naming ``name``.
    """
    if not is_int_id(user_id) or session.get(User, user_id) is None:
        raise ValidationFailed({"user": [f"Unknown user {user_id}."]})
    if name is not None and len(name) > NAME_LENGTH:
        raise ValidationFailed({"name": [f"The name may not be greater than {NAME_LENGTH} characters."]})
    secret = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(id=str(uuid.uuid4()), user_id=user_id, name=name, token_hash=hash_token(secret),
                     created_at=now)
    session.add(token)
    session.flush()
    return token, secret


class TokenOwner(NamedTuple):
    """Who a valid token belongs to: its user's id and email."""

    id: int
    email: str | None


# Built once: a statement object reused is compiled once and its cache key computed once, where a
# new select() per request would cost both on every request (this runs on every API request).
_LOOKUP = (select(ApiToken.id, ApiToken.token_hash, ApiToken.revoked_at, ApiToken.last_used_at, User.id, User.email)
           .join(User, User.id == ApiToken.user_id).where(ApiToken.token_hash == bindparam("digest")))
_TOUCH = (update(ApiToken)
          .where(ApiToken.id == bindparam("token_id"),
                 or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= bindparam("stale")))
          .values(last_used_at=bindparam("now")))


def authenticate(db: Session | Connection, secret: Any, now: datetime) -> TokenOwner | None:
    """The user a bearer token belongs to, or None when it is malformed, unknown or revoked.

    The row is found by the digest of ``secret`` (unique index), then the digests are compared with
    ``hmac.compare_digest``: the lookup's timing depends only on the digest, which reveals nothing
    about the secret. ``last_used_at`` is updated at most once a minute, in the caller's
    transaction (use ``sessions.begin()`` / ``engine.begin()`` or commit for it to be kept). Core
    statements: no ORM objects are made for a check that runs on every request.
    """
    if not isinstance(secret, str) or not secret.startswith(PREFIX) or len(secret) > MAX_LENGTH:
        return None
    digest = hash_token(secret)
    conn = db.connection() if isinstance(db, Session) else db
    row = conn.execute(_LOOKUP, {"digest": digest}).first()  # one round trip for token and user
    if row is None:
        return None
    token_id, stored, revoked_at, last_used_at, user_id, email = row
    if not hmac.compare_digest(stored, digest) or revoked_at is not None:
        return None
    if last_used_at is None or last_used_at <= now - TOUCH_EVERY:
        # Conditional, so concurrent requests of one client write it once between them.
        conn.execute(_TOUCH, {"token_id": token_id, "stale": now - TOUCH_EVERY, "now": now})
    return TokenOwner(user_id, email)


def list_tokens(session: Session) -> list[ApiToken]:
    """Every token, revoked ones included, oldest first."""
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)))


def get_token(session: Session, token_id: str) -> ApiToken:
    """The token with this id, or NotFound (also for ids that are not UUIDs)."""
    try:
        key = str(uuid.UUID(str(token_id)))
    except ValueError:
        raise NotFound(f"token {token_id} not found") from None
    token = session.get(ApiToken, key)
    if token is None:
        raise NotFound(f"token {token_id} not found")
    return token


def revoke_token(session: Session, token_id: str, now: datetime) -> ApiToken:
    """Revoke a token: it no longer authenticates. Revoking it again keeps the first ``revoked_at``."""
    token = get_token(session, token_id)
    if token.revoked_at is None:
        token.revoked_at = now
        session.flush()
    return token


def token_to_json(token: ApiToken) -> dict[str, Any]:
    """The listing shape of a token: never its secret or its hash."""
    return {
        "id": token.id,
        "user_id": token.user_id,
        "name": token.name,
        "created_at": fmt(token.created_at),
        "last_used_at": fmt(token.last_used_at),
        "revoked_at": fmt(token.revoked_at),
    }
