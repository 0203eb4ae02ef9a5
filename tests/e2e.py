"""Helpers for end-to-end tests: real PostgreSQL, Redis and SMTP, the service's own code paths."""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from collections.abc import Iterator
from typing import Any

from storage import campaigns as repo
from storage.loader import load_bundle
from worker.pipeline.app import App
from worker.pipeline.roles import running_worker, tick
from worker.runtime.settings import Settings
from tests.seed_payloads import RELATIONS_PATH

FINAL = ("completed", "failed", "cancelled")


def contact(i: int, *, email: str | None = "", first_name: str | None = None, consent_email: bool | None = True,
            last_name: str = "Larsen", **fields: Any) -> dict[str, Any]:
    """A seed-shaped contact; ``email=""`` means the default ``person<i>@example.com``."""
    values = {"first_name": first_name or f"Person{i}", "last_name": last_name,
              "email": f"person{i}@example.com" if email == "" else email, **fields}
    return {
        "id": str(uuid.UUID(int=10_000 + i)), "b2c": True, "team_id": 1, "status": None,
        "user": {"id": 1 + i % 2},
        "fixed_fields": [{"name": k, "value": v} for k, v in values.items()],
        "custom_fields": {"tier": "gold" if i % 2 else "silver"},
        "consent": {"email": {"consent_given": consent_email, "updated_at": ""}},
    }


def bundle(contacts: list[dict[str, Any]], *, domain: str | None = None) -> dict[str, Any]:
    return {
        "settings": {"domain": domain, "domain_slug": "acme",
                     "consent": {"custom": True, "unsubscribe_url": "https://acme.example/unsubscribe"}},
        "teams": [{"id": 1, "name": "Sales"}],
        "users": [{"id": 1, "first_name": "Doe", "last_name": "John", "email": "john@acme.example", "team_id": 1},
                  {"id": 2, "first_name": "Ann", "last_name": "Lee", "email": "ann@acme.example", "team_id": 1}],
        "templates": [{"id": 2, "type": "email", "company_id": 1, "title": "Email", "user_id": 1,
                       "content": "<html><body><div class='wrap'>{{ content }}</div></body></html>"}],
        "relations_paths": [{"id": RELATIONS_PATH, "name": "Default"}],
        "contacts": contacts,
    }


def email_payload(**overrides: Any) -> dict[str, Any]:
    payload = {
        "name": "Spring news", "type": "email", "approved": True, "execute_now": True,
        "message": {"subject": "Hi {{ contact.first_name }}", "sender": "news@acme.example",
                    "content": "<p>Dear {{ contact.first_name }} ({{ contact.custom_fields.tier }})</p>"},
        "filter": [{"field": "contact.fixed_fields.last_name", "operator": "eq", "value": "larsen"}],
        "template_id": 2,
    }
    payload.update(overrides)
    return payload


def make_app(db_url: str, redis_url: str, smtp_url: str | None, **extra: Any) -> App:
    """An App as the CLI builds it, with short reconcile timings for tests."""
    values = {"database_url": db_url, "broker_url": redis_url, "smtp_url": smtp_url, "lease_seconds": 20.0,
              "stall_seconds": 1.0, "retry_base_seconds": 0.2, "delivery_batch_size": 10, "log_format": "json"}
    values.update(extra)
    return App(Settings(**values))


def load(app: App, data: dict[str, Any]) -> None:
    load_bundle(app.sessions, data)


@contextmanager
def in_process_worker(app: App, threads: int = 4) -> Iterator[Any]:
    """A Dramatiq worker on the real Redis broker, inside the test process."""
    with running_worker(app, threads, idle_poll_ms=100) as actors:
        yield actors


def drive(app: App, campaign_id: str, timeout: float = 60.0) -> str:
    """Run the scheduler's jobs until the campaign is final; return its status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick(app)
        with app.sessions() as session:
            status = repo.get_campaign(session, campaign_id).status
        if status in FINAL:
            return status
        time.sleep(0.1)
    raise AssertionError(f"campaign {campaign_id} not final after {timeout}s (status {status})")


def api_client(port: int, token: str, process, timeout: float = 30.0):
    """An httpx client with ``token`` for the API a subprocess serves on ``port``, once ``/healthz``
    answers 200 (the process must not exit meanwhile)."""
    import httpx

    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.get("/healthz").status_code == 200:
                return client
        except httpx.TransportError:
            pass
        assert process.poll() is None, process.stderr.read()[-2000:] if process.stderr else "the API exited"
        assert time.monotonic() < deadline, "the API did not come up"
        time.sleep(0.2)
