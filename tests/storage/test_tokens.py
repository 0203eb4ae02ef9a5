"""API tokens on both databases: only the hash is stored, and only a live token authenticates."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from storage.errors import NotFound, ValidationFailed
from storage.models import ApiToken, User
from storage.timefmt import now
from storage.tokens import authenticate, create_token, hash_token, list_tokens, revoke_token, token_to_json


@pytest.fixture
def token(sessions) -> tuple[str, str]:
    """A token of user 1 (user 2 exists too): its id and its secret."""
    with sessions.begin() as s:
        s.add_all([User(id=1, first_name="A"), User(id=2, first_name="B")])
        s.flush()
        row, secret = create_token(s, 1, "ci", now())
        return row.id, secret


def _authenticate(sessions, secret, at=None) -> int | None:
    with sessions.begin() as s:
        user = authenticate(s, secret, at or now())
        return None if user is None else user.id


def test_a_created_token_authenticates_as_its_user(sessions, token):
    _, secret = token
    assert secret.startswith("cdt_") and len(secret) > 40
    assert _authenticate(sessions, secret) == 1


def test_two_tokens_have_different_secrets(sessions, token):
    with sessions.begin() as s:
        _, other = create_token(s, 2, None, now())
    assert other != token[1]
    assert _authenticate(sessions, other) == 2


@pytest.mark.parametrize("bad", ["", "cdt_", "nonsense", "cdt_" + "A" * 43, "x" * 10_000, None, 42])
def test_malformed_or_unknown_secrets_do_not_authenticate(sessions, token, bad):
    assert _authenticate(sessions, bad) is None


def test_a_secret_with_one_character_changed_does_not_authenticate(sessions, token):
    _, secret = token
    for i in (0, 4, len(secret) // 2, len(secret) - 1):
        changed = secret[:i] + ("B" if secret[i] != "B" else "C") + secret[i + 1:]
        assert _authenticate(sessions, changed) is None
    assert _authenticate(sessions, secret + "x") is None and _authenticate(sessions, secret[:-1]) is None


def test_a_revoked_token_does_not_authenticate_and_revoking_twice_is_fine(sessions, token):
    token_id, secret = token
    at = now()
    with sessions.begin() as s:
        assert revoke_token(s, token_id, at).revoked_at == at
    with sessions.begin() as s:
        assert revoke_token(s, token_id, at + timedelta(hours=1)).revoked_at == at  # the first revocation stays
    assert _authenticate(sessions, secret) is None


def test_revoking_an_unknown_token_is_not_found(sessions, token):
    with sessions.begin() as s:
        for bad in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
            with pytest.raises(NotFound):
                revoke_token(s, bad, now())


def test_an_unknown_user_is_refused_naming_user(sessions, token):
    with sessions.begin() as s:
        with pytest.raises(ValidationFailed) as exc:
            create_token(s, 7, None, now())
    assert exc.value.errors == {"user": ["Unknown user 7."]}


def test_only_the_hash_is_stored(sessions, engine, token):
    token_id, secret = token
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM api_tokens WHERE id = :id"), {"id": token_id}).mappings().one()
    assert row["token_hash"] == hash_token(secret) and len(row["token_hash"]) == 64
    assert all(secret not in str(value) and secret[len("cdt_"):] not in str(value) for value in row.values())


def test_the_listing_shows_no_secret_nor_hash(sessions, token):
    token_id, secret = token
    with sessions() as s:
        listed = [token_to_json(t) for t in list_tokens(s)]
    assert [t["id"] for t in listed] == [token_id]
    assert set(listed[0]) == {"id", "user_id", "name", "created_at", "last_used_at", "revoked_at"}
    assert listed[0]["user_id"] == 1 and listed[0]["name"] == "ci" and listed[0]["last_used_at"] is None
    assert secret not in str(listed) and hash_token(secret) not in str(listed)


def test_last_used_at_is_written_at_most_once_a_minute(sessions, token):
    token_id, secret = token
    first = now()

    def last_used():
        with sessions() as s:
            return s.get(ApiToken, token_id).last_used_at

    assert _authenticate(sessions, secret, first) == 1
    assert last_used() == first
    assert _authenticate(sessions, secret, first + timedelta(seconds=59)) == 1
    assert last_used() == first
    assert _authenticate(sessions, secret, first + timedelta(seconds=61)) == 1
    assert last_used() == first + timedelta(seconds=61)
