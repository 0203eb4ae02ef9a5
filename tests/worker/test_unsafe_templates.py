"""Templates the sandbox would refuse for every recipient are refused by ``campaigns create`` and
``update`` (exit 2, naming the field), through the real entry point (SQLite: the check is the same
on both databases)."""

from __future__ import annotations

import pytest

from storage.models import Template
from tests.cli import CliRunner
from tests.seed_payloads import create_payload, update_payload
from tests.worker.test_campaigns_cli import _write, seed_catalogue

UNSAFE_WRAPPER_ID = 5


@pytest.fixture
def db_url(sqlite_url):
    return sqlite_url


@pytest.fixture
def cli(monkeypatch, capsys, db_url, sessions):
    seed_catalogue(sessions)
    with sessions.begin() as s:
        s.add(Template(id=UNSAFE_WRAPPER_ID, type="email", company_id=1, title="Unsafe template", user_id=1,
                       content="<html><body>{{ content }}{{ range(10**9) }}</body></html>"))
    return CliRunner(monkeypatch, capsys, DATABASE_URL=db_url)


def _create(cli, tmp_path, **message):
    payload = create_payload()
    payload["message"].update(message)
    return cli("campaigns", "create", _write(tmp_path, payload), "--user", "1")


def _refused(result, field: str, reason: str) -> None:
    assert result.code == 2, result.out
    body = result.json
    assert set(body) == {"message", "errors"}, body
    assert list(body["errors"]) == [field], body
    assert any(reason in problem for problem in body["errors"][field]), body
    assert "Traceback" not in result.err


UNSAFE_CONTENT = [
    ("{{ cycler.__init__.__globals__ }}", "'__init__' is not allowed"),
    ("{{ cycler|attr('__init__') }}", "'__init__' is not allowed"),  # only rendering can see this one
    ("{{ range(10**9) }}", "range() of more than 10000 items is not allowed"),
    ("{{ 'a' * 10**7 }}", "repeating a value to more than 2 MiB is not allowed"),
    ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
     "loops of more than 100000 steps in all are not allowed"),
    ("{% for i in range(3000) %}{{ 'x' * 1000 }}{% endfor %}", "the rendered content would exceed 2 MiB"),
    ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
     "rendering took longer than 1 s"),
]


@pytest.mark.parametrize(("content", "reason"), UNSAFE_CONTENT, ids=[c[:40] for c, _ in UNSAFE_CONTENT])
def test_unsafe_content_is_refused_at_create(cli, tmp_path, content, reason):
    _refused(_create(cli, tmp_path, content=content), "message.content", reason)
    assert cli("campaigns", "list").json["pagination"]["total"] == 0


def test_unsafe_subject_is_refused_at_create(cli, tmp_path):
    result = _create(cli, tmp_path, subject="Hello {{ 'a' * 10**7 }}")
    _refused(result, "message.subject", "repeating a value to more than 2 MiB is not allowed")
    assert cli("campaigns", "list").json["pagination"]["total"] == 0


def test_unsafe_stored_template_is_refused_under_template_id(cli, tmp_path):
    payload = create_payload()
    payload["template_id"] = UNSAFE_WRAPPER_ID
    result = cli("campaigns", "create", _write(tmp_path, payload), "--user", "1")
    _refused(result, "template_id", "range() of more than 10000 items is not allowed")
    assert cli("campaigns", "list").json["pagination"]["total"] == 0


def test_unsafe_content_is_refused_at_update_and_the_campaign_is_unchanged(cli, tmp_path):
    created = _create(cli, tmp_path)
    assert created.code == 0, created.out
    payload = update_payload()
    payload["message"]["content"] = "{{ range(10**9) }}"
    result = cli("campaigns", "update", created.json["id"], _write(tmp_path, payload, "u.json"))
    _refused(result, "message.content", "range() of more than 10000 items is not allowed")
    assert cli("campaigns", "show", created.json["id"]).json["message"]["content"] == "This is my content"


def test_a_normal_template_is_still_created(cli, tmp_path):
    content = (
        "<p>Hi {{ contact.first_name|default('there', true)|title }},</p>\n"
        "{% if contact.city %}<p>News from {{ contact.city }}</p>{% else %}<p>News for you</p>{% endif %}\n"
        "<ul>{% for key in contact.custom_fields %}<li>{{ key }}: {{ contact.custom_fields[key] }}</li>"
        "{% endfor %}</ul>\n"
        "{% for i in range(3) %}{{ loop.index }}{% endfor %} {{ range(10000)|list|length }}\n"
        "<p>{{ sender.first_name }} {{ sender.last_name }}, {{ campaign.name|upper }}</p>"
    )
    result = _create(cli, tmp_path, content=content, subject="{{ contact.first_name|default('Hi', true) }}!")
    assert result.code == 0, result.out
    assert result.json["message"]["content"] == content
