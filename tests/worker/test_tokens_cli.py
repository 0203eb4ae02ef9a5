"""``tokens create|list|revoke`` through the real entry point, on both databases."""

from __future__ import annotations

import uuid

import pytest

from storage.models import User
from storage.timefmt import now
from storage.tokens import authenticate
from tests.cli import CliRunner


@pytest.fixture
def cli(monkeypatch, capsys, db_url, sessions):
    with sessions.begin() as s:
        s.add(User(id=1, first_name="Ann", last_name="Doe"))
    return CliRunner(monkeypatch, capsys, DATABASE_URL=db_url)


def _user_of(sessions, secret: str) -> int | None:
    with sessions.begin() as s:
        user = authenticate(s, secret, now())
        return None if user is None else user.id


def test_create_prints_the_token_once_and_list_never(cli, sessions):
    created = cli("tokens", "create", "--user", "1", "--name", "crm")
    assert created.code == 0, created.out
    body = created.json
    uuid.UUID(body["id"])
    assert body["user_id"] == 1 and body["name"] == "crm" and body["token"].startswith("cdt_")
    assert set(body) == {"id", "user_id", "name", "token", "created_at"}
    assert _user_of(sessions, body["token"]) == 1

    listed = cli("tokens", "list")
    assert listed.code == 0, listed.out
    assert body["token"] not in listed.out and body["token"][len("cdt_"):] not in listed.out
    (row,) = listed.json["data"]
    assert row["id"] == body["id"] and row["name"] == "crm" and row["created_at"] == body["created_at"]
    assert row["revoked_at"] is None and row["last_used_at"] is not None  # authenticated above
    assert set(row) == {"id", "user_id", "name", "created_at", "last_used_at", "revoked_at"}


def test_a_revoked_token_no_longer_authenticates(cli, sessions):
    body = cli("tokens", "create", "--user", "1").json
    assert body["name"] is None
    revoked = cli("tokens", "revoke", body["id"])
    assert revoked.code == 0 and revoked.json == {}
    assert _user_of(sessions, body["token"]) is None
    assert cli("tokens", "revoke", body["id"]).code == 0  # twice is fine
    (row,) = cli("tokens", "list").json["data"]
    assert row["revoked_at"] is not None


def test_an_unknown_user_exits_2_naming_user(cli):
    result = cli("tokens", "create", "--user", "7")
    assert result.code == 2
    assert result.json["errors"] == {"user": ["Unknown user 7."]}
    assert cli("tokens", "list").json == {"data": []}


@pytest.mark.parametrize("token_id", [str(uuid.uuid4()), "nope"])
def test_revoking_an_unknown_id_exits_3(cli, token_id):
    result = cli("tokens", "revoke", token_id)
    assert result.code == 3
    assert token_id in result.err
