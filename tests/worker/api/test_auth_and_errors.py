"""Tokens and bad input over HTTP: 401 changes nothing, every mistake answers with its field, no traceback."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from storage.models import Campaign
from storage.timefmt import now
from storage.tokens import list_tokens, revoke_token
from tests.worker.api.conftest import Served, serve
from tests.worker.api.test_endpoints import seed_payload
from tests.e2e import make_app


def campaigns_count(served: Served) -> int:
    with served.app.sessions() as session:
        return session.scalar(select(func.count()).select_from(Campaign))


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer nope", "Basic dXNlcjpwYXNz", "Bearer cdt_" + "x" * 43])
def test_no_valid_token_is_401_and_changes_nothing(api: Served, header):
    shown = api.client.post("/campaigns", json=seed_payload()).json()["id"]
    client = api.anonymous()
    headers = {"Authorization": header} if header else {}
    for method, path, body in [("POST", "/campaigns", seed_payload()), ("GET", "/campaigns", None),
                               ("GET", f"/campaigns/{shown}", None),  # its read shares the token check's connection
                               ("PUT", "/campaigns/settings", {"domain_slug": "evil"}), ("GET", "/status", None)]:
        answer = client.request(method, path, json=body, headers=headers)
        assert answer.status_code == 401 and answer.json() == {"message": "Unauthenticated."}
    assert campaigns_count(api) == 1
    assert api.client.get("/campaigns/settings").json()["domain_slug"] == "acme"


def test_revoked_token_is_refused_at_once(api: Served):
    shown = api.client.post("/campaigns", json=seed_payload()).json()["id"]
    assert api.client.get("/campaigns").status_code == 200
    assert api.client.get(f"/campaigns/{shown}").status_code == 200
    with api.app.sessions.begin() as session:
        revoke_token(session, list_tokens(session)[0].id, now())
    assert api.client.get("/campaigns").status_code == 401
    assert api.client.get(f"/campaigns/{shown}").status_code == 401


@pytest.mark.parametrize("served", ["api", "sqlite_api"])
def test_a_request_notes_when_its_token_was_last_used(served, request):
    served = request.getfixturevalue(served)
    with served.app.sessions() as session:
        assert list_tokens(session)[0].last_used_at is None
    assert served.client.get("/campaigns").status_code == 200
    with served.app.sessions() as session:  # written and committed by the check itself
        used = list_tokens(session)[0].last_used_at
    assert used is not None and abs((now() - used).total_seconds()) < 60


def test_the_tokens_user_owns_what_it_creates(api: Served):
    other = api.token_for(2)
    created = api.anonymous().post("/campaigns", json=seed_payload(), headers={"Authorization": f"Bearer {other}"})
    assert created.status_code == 201 and created.json()["user"]["id"] == 2
    assert other not in created.text and api.token not in created.text


def test_malformed_json_is_400(api: Served):
    answer = api.client.post("/campaigns", content=b'{"name": ', headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and "JSON" in answer.json()["message"]


def test_wrong_fields_are_422_naming_the_dotted_field(api: Served):
    answer = api.client.post("/campaigns", json=seed_payload(message={"subject": "s", "content": "c",
                                                                       "sender": "not an address"},
                                                               send_at="2001-01-01 00:00:00"))
    assert answer.status_code == 422
    errors = answer.json()["errors"]
    assert answer.json()["message"] == "The given data was invalid."
    assert "message.sender" in errors and "send_at" in errors
    assert api.client.get("/campaigns", params={"page": "x"}).json()["errors"] == {
        "page": ["Input should be a valid integer, unable to parse string as an integer"]}
    assert "per_page" in api.client.get("/campaigns", params={"per_page": 0}).json()["errors"]
    # A page whose row offset would not fit the database's integers: a 422 naming it, not a 500.
    for path in ("/campaigns", "/campaigns/some-id/messages", "/campaigns/some-id/recipients"):
        huge = api.client.get(path, params={"page": 10**30})
        assert huge.status_code == 422 and huge.json()["errors"] == {
            "page": ["The page must be between 1 and 2147483647."]}, (path, huge.text)
    assert api.client.get("/campaigns", params={"page": 2**31 - 1, "per_page": 500}).json()["data"] == []
    not_object = api.client.post("/campaigns", json=[1, 2])
    assert not_object.status_code == 422 and "body" in not_object.json()["errors"]


def test_template_that_would_fail_every_recipient_is_422_at_create(api: Served):
    answer = api.client.post("/campaigns", json=seed_payload(message={
        "subject": "s", "sender": "a@acme.example", "content": "{{ cycler.__init__.__globals__ }}"}))
    assert answer.status_code == 422 and "message.content" in answer.json()["errors"]


def test_unknown_ids_are_404(api: Served):
    c = api.client
    for path in ["/campaigns/nope", "/campaigns/nope/recipients", "/campaigns/nope/letters", "/files/nope",
                 "/campaigns/nope/recipients/export/nope", "/nowhere"]:
        answer = c.get(path)
        assert answer.status_code == 404 and answer.json()["message"], path


def test_body_over_a_mebibyte_is_413(api: Served):
    big = {"name": "x" * (1024 * 1024 + 1)}
    assert api.client.post("/campaigns", json=big).status_code == 413
    chunked = api.client.post("/campaigns", content=iter([b'{"name": "', b"x" * (1024 * 1024), b'"}']),
                              headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
    assert campaigns_count(api) == 0


def test_an_unexpected_fault_is_500_without_traceback(tmp_path, redis_url):
    # A database without the schema: every query fails in a way no rule of ours foresees.
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    app = make_app(url, redis_url, None)
    with app.engine.begin() as conn:  # only the tokens table, so authentication itself works
        from storage.models import ApiToken, User
        User.__table__.create(conn)
        ApiToken.__table__.create(conn)
        conn.execute(User.__table__.insert().values(id=1, email="john@acme.example"))
    try:
        for served in serve(app):
            answer = served.client.get("/campaigns")
            assert answer.status_code == 500
            assert set(answer.json()) == {"message"}
            assert "Traceback" not in answer.text and "sqlite" not in answer.text.lower()
    finally:
        app.close()


def test_every_route_but_health_and_metrics_refuses_a_request_without_token(api: Served):
    """Each endpoint authenticates itself (in the thread doing its work): none may forget to."""
    import re

    client = api.anonymous()
    spec = api.client.get("/openapi.json").json()
    routes = [(method.upper(), path) for path, item in spec["paths"].items() for method in item]
    routes += [("GET", "/openapi.json"), ("GET", "/docs")]  # not in the description, authenticated too
    checked = 0
    for method, path in routes:
        if path in ("/healthz", "/metrics"):
            continue
        answer = client.request(method, re.sub(r"\{[^}]+\}", "1", path),
                                json={} if method in ("POST", "PUT") else None)
        assert answer.status_code == 401, (method, path, answer.status_code)
        checked += 1
    assert checked >= 27
    assert campaigns_count(api) == 0
