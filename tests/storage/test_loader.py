"""Loading a bundle and JSON Lines: counts, idempotent upserts, all-or-nothing bundles, streaming."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from storage.errors import ValidationFailed
from storage.loader import load_bundle, load_jsonl
from storage.models import CampaignSettings, Contact, RelationsPath, Team, Template, User

DATA = Path(__file__).parent.parent / "data"
TABLES = ("teams", "users", "templates", "relations_paths", "contacts")


@pytest.fixture
def bundle() -> dict:
    return json.loads((DATA / "bundle.json").read_text(encoding="utf-8"))


def snapshot(sessions) -> dict:
    """Every row of the loaded tables, as plain values (settings without its update time)."""
    with sessions() as session:
        rows = {t: session.execute(text(f"SELECT * FROM {t} ORDER BY id")).all() for t in TABLES}
        rows["settings"] = session.execute(text(
            "SELECT id, domain, domain_slug, consent_custom, unsubscribe_url FROM campaign_settings")).all()
    return rows


def count(sessions, model) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_bundle_counts_and_rows(sessions, bundle):
    counts = load_bundle(sessions, bundle)
    assert counts == {"settings": 1, "teams": 2, "users": 4, "templates": 2, "relations_paths": 1, "contacts": 8}
    with sessions() as session:
        settings = session.get(CampaignSettings, 1)
        assert (settings.domain, settings.domain_slug, settings.consent_custom, settings.unsubscribe_url) == (
            None, "acme", True, "https://acme.example/unsubscribe")
        assert "{{ content }}" in session.get(Template, 2).content
        assert session.get(Template, 3).type == "letter"
        assert session.get(RelationsPath, "9eae431b-3d0f-4528-9c59-e9d1a40fcd04").name == "Default"
        assert session.get(User, 3).first_name == "Søren" and session.get(User, 3).team_id == 2
        assert session.get(Team, 2).name == "Key accounts"
        no_email = session.get(Contact, bundle["contacts"][3]["id"])
        assert no_email.email is None and no_email.consent_email is None
        assert session.get(Contact, bundle["contacts"][4]["id"]).consent_email is False
        assert session.get(Contact, bundle["contacts"][5]["id"]).address is None
        # An absent object is SQL NULL, not the JSON document null (filters test IS NULL).
        assert session.scalar(select(func.count()).where(Contact.custom_fields.is_(None))) == 1


def test_loading_twice_gives_the_same_rows(sessions, bundle):
    load_bundle(sessions, bundle)
    first = snapshot(sessions)
    assert load_bundle(sessions, bundle)["contacts"] == 8
    assert snapshot(sessions) == first


def test_a_changed_field_is_updated(sessions, bundle):
    load_bundle(sessions, bundle)
    changed = copy.deepcopy(bundle)
    for item in changed["contacts"][0]["fixed_fields"]:
        if item["name"] == "city":
            item["value"] = "Odense"
    changed["contacts"][0]["consent"]["email"]["consent_given"] = False
    changed["templates"][0]["content"] = "<p>{{ content }}</p>"
    changed["teams"][0]["name"] = "Sales DK"
    load_bundle(sessions, {"contacts": changed["contacts"], "templates": changed["templates"],
                           "teams": changed["teams"]})
    with sessions() as session:
        contact = session.get(Contact, bundle["contacts"][0]["id"])
        assert contact.city == "Odense" and contact.consent_email is False
        assert session.get(Template, 2).content == "<p>{{ content }}</p>"
        assert session.get(Team, 1).name == "Sales DK"
    assert count(sessions, Contact) == 8


def test_an_embedded_user_does_not_erase_the_users_team(sessions, bundle):
    load_bundle(sessions, bundle)
    contact = copy.deepcopy(bundle["contacts"][0])
    contact["user"]["job_title"] = "Head of sales"
    load_bundle(sessions, {"contacts": [contact]})
    with sessions() as session:
        user = session.get(User, 1)
        assert (user.job_title, user.team_id) == ("Head of sales", 1)


def _broken(bundle: dict, path: str, value) -> dict:
    data = copy.deepcopy(bundle)
    *parents, last = path.split(".")
    target = data
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return data


@pytest.mark.parametrize("path, value, field", [
    ("settings.domain_slug", "Not A Slug!", "settings.domain_slug"),
    ("settings.consent", {"custom": True, "unsubscribe_url": None}, "settings.consent.unsubscribe_url"),
    ("teams.1.name", None, "teams.1.name"),
    ("teams.1.id", "2", "teams.1.id"),
    ("teams.1", {"id": 1, "name": "Again"}, "teams.1.id"),
    ("users.2.id", 2**40, "users.2.id"),
    ("users.2.email_notifications", "no", "users.2.email_notifications"),
    ("users.2.updated_at", "2024-03-01", "users.2.updated_at"),
    ("templates.0.type", "sms", "templates.0.type"),
    ("templates.1.content", ["<p>"], "templates.1.content"),
    ("relations_paths.0.id", "default", "relations_paths.0.id"),
    ("contacts.3.fixed_fields.9", {"name": "e_mail", "value": "x"}, "contacts.3.fixed_fields.e_mail"),
    ("contacts.5.id", "7b1c0d4e-5f60-4a7b-8c9d-000000000001", "contacts.5.id"),
    ("contacts.6.custom_fields", {"nested": {"a": 1}}, "contacts.6.custom_fields.nested"),
    ("contacts", {"id": "x"}, "contacts"),
    ("campaigns", [], "campaigns"),
])
def test_an_invalid_bundle_names_the_field_and_writes_nothing(sessions, bundle, path, value, field):
    with pytest.raises(ValidationFailed) as caught:
        load_bundle(sessions, _broken(bundle, path, value))
    assert field in caught.value.errors, caught.value.errors
    assert count(sessions, Contact) == count(sessions, Team) == count(sessions, User) == 0
    assert count(sessions, CampaignSettings) == 0


def test_a_bundle_must_be_an_object(sessions):
    with pytest.raises(ValidationFailed) as caught:
        load_bundle(sessions, [1, 2])
    assert list(caught.value.errors) == ["file"]


def test_every_key_is_optional(sessions, bundle):
    assert load_bundle(sessions, {}) == dict.fromkeys(
        ("settings", "teams", "users", "templates", "relations_paths", "contacts"), 0)
    assert load_bundle(sessions, {"relations_paths": bundle["relations_paths"]})["relations_paths"] == 1


def _jsonl(path: Path, objects) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for obj in objects:
            handle.write((obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)) + "\n")
    return path


def _generated(bundle: dict, n: int):
    template = bundle["contacts"][0]
    for i in range(n):
        obj = copy.deepcopy(template)
        obj["id"] = str(uuid.UUID(int=i + 1))
        obj["user"] = dict(bundle["contacts"][i % 3]["user"] or {"id": 1})
        obj["custom_fields"] = {"n": i} if i % 10 else None
        yield obj


def test_jsonl_streams_thousands_of_lines_in_small_batches(sessions, bundle, tmp_path):
    path = _jsonl(tmp_path / "contacts.jsonl", _generated(bundle, 5000))
    assert load_jsonl(sessions, path, batch_size=300) == {"contacts": 5000, "users": 2}
    assert count(sessions, Contact) == 5000
    first = snapshot(sessions)
    assert load_jsonl(sessions, path, batch_size=700)["contacts"] == 5000
    assert snapshot(sessions) == first
    with sessions() as session:
        last = session.get(Contact, str(uuid.UUID(int=5000)))
        assert last.custom_fields == {"n": "4999"} and last.first_name == "Søren"
        assert session.scalar(select(func.count()).where(Contact.custom_fields.is_(None))) == 500


def test_jsonl_sample_file_and_blank_lines(sessions, bundle, tmp_path):
    assert load_jsonl(sessions, DATA / "contacts.jsonl") == {"contacts": 8, "users": 3}
    path = _jsonl(tmp_path / "gaps.jsonl", ["", json.dumps(bundle["contacts"][0]), "   "])
    assert load_jsonl(sessions, path)["contacts"] == 1


def test_jsonl_the_later_line_wins_for_a_repeated_id(sessions, bundle, tmp_path):
    first, second = copy.deepcopy(bundle["contacts"][0]), copy.deepcopy(bundle["contacts"][0])
    second["status"] = "customer"
    path = _jsonl(tmp_path / "twice.jsonl", [first, second])
    load_jsonl(sessions, path, batch_size=10)
    with sessions() as session:
        assert session.get(Contact, first["id"]).status == "customer"


def test_jsonl_bad_line_names_it_keeps_earlier_lines_and_says_how_to_recover(sessions, bundle, tmp_path):
    lines = list(_generated(bundle, 30))
    lines[16] = dict(lines[16], id="not-a-uuid")  # line 17
    lines[20] = "{not json"                         # line 21
    path = _jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ValidationFailed) as caught:
        load_jsonl(sessions, path, batch_size=5)
    assert set(caught.value.errors) == {"line.17.id", "line.21"}
    assert "Line 17" in caught.value.message and "idempotent" in caught.value.message
    assert count(sessions, Contact) == 16
    lines[16], lines[20] = list(_generated(bundle, 30))[16], list(_generated(bundle, 30))[20]
    assert load_jsonl(sessions, _jsonl(path, lines), batch_size=5)["contacts"] == 30
    assert count(sessions, Contact) == 30


def test_jsonl_a_line_that_is_not_an_object(sessions, tmp_path):
    path = _jsonl(tmp_path / "array.jsonl", ["[1, 2]"])
    with pytest.raises(ValidationFailed) as caught:
        load_jsonl(sessions, path)
    assert caught.value.errors == {"line.1": ["must be an object"]}


def test_jsonl_invalid_utf8_names_the_line(sessions, bundle, tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(bundle["contacts"][0]).encode() + b"\n" + '{"id": "Ø"}'.encode("latin-1") + b"\n")
    with pytest.raises(ValidationFailed) as caught:
        load_jsonl(sessions, path)
    assert list(caught.value.errors) == ["line.2"]
    assert count(sessions, Contact) == 1


def test_jsonl_missing_file_names_file(sessions, tmp_path):
    with pytest.raises(ValidationFailed) as caught:
        load_jsonl(sessions, tmp_path / "nope.jsonl")
    assert list(caught.value.errors) == ["file"]


# --- the command line ---------------------------------------------------------------------------

@pytest.fixture
def cli():
    """The real CLI group (``load`` is registered by worker.cli.main)."""
    from worker.cli.main import cli

    return cli


def test_cli_loads_a_bundle_then_json_lines(cli, db_url):
    from click.testing import CliRunner

    runner = CliRunner()
    result = runner.invoke(cli, ["load", str(DATA / "bundle.json")], env={"DATABASE_URL": db_url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"settings": 1, "teams": 2, "users": 4, "templates": 2,
                                         "relations_paths": 1, "contacts": 8}
    result = runner.invoke(cli, ["load", str(DATA / "contacts.jsonl"), "--batch-size", "3"],
                           env={"DATABASE_URL": db_url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"contacts": 8, "users": 3}


def _main(argv, monkeypatch, capsys, url) -> tuple[int, dict, str]:
    from worker.cli.main import main

    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    return exited.value.code, json.loads(out), err


@pytest.mark.parametrize("name, content", [
    ("contacts.csv", "id,name\n"),
    ("broken.json", "{\"teams\": ["),
    ("latin1.json", None),
    ("missing.json", ...),
    ("a-directory.json", "dir"),
    ("list.json", "[]"),
])
def test_cli_bad_file_exits_2_naming_file(cli, sqlite_url, tmp_path, monkeypatch, capsys, name, content):
    path = tmp_path / name
    if content is None:
        path.write_bytes('{"teams": [{"id": 1, "name": "Ø"}]}'.encode("latin-1"))
    elif content == "dir":
        path.mkdir()
    elif content is not ...:
        path.write_text(content)
    code, document, err = _main(["load", str(path)], monkeypatch, capsys, sqlite_url)
    assert code == 2
    assert list(document["errors"]) == ["file"], document
    assert err.startswith("error:")


def test_cli_invalid_bundle_exits_2_naming_the_field(cli, sqlite_url, bundle, tmp_path, monkeypatch, capsys):
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(_broken(bundle, "contacts.0.id", "nope")))
    code, document, _ = _main(["load", str(path)], monkeypatch, capsys, sqlite_url)
    assert code == 2 and list(document["errors"]) == ["contacts.0.id"]


def test_cli_without_schema_tells_to_run_db_upgrade(cli, tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    code, document, err = _main(["load", str(DATA / "bundle.json")], monkeypatch, capsys, url)
    assert code == 1
    assert "campaign-dispatch db upgrade" in document["message"] and "db upgrade" in err
