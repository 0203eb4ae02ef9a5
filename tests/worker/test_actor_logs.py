"""The lines an actor writes while it processes a message name the campaign (bound by the pipeline) and
the actor and message (bound by the broker's LogContext middleware): one campaign's story can be
followed through the workers' logs. An in-process StubBroker, a real SMTP server and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import dramatiq
import structlog
from structlog.testing import LogCapture

from storage.models import Campaign
from tests.e2e import bundle, contact, email_payload, in_process_worker, load, make_app
from worker.pipeline import campaign_service
from worker.pipeline.actors import CAMPAIGNS_QUEUE, DEFAULT_QUEUE, DELIVERY_QUEUE


@contextmanager
def captured() -> Iterator[list[dict]]:
    """Every structlog event, with the bound contextvars merged in (capture_logs alone drops that
    processor), at every level; the previous configuration is restored afterwards."""
    old = structlog.get_config()
    capture = LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture],
                        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
                        cache_logger_on_first_use=False)
    try:
        yield capture.entries
    finally:
        structlog.configure(**old)


def _run_campaign(pg_db, smtp_server, contacts: int) -> tuple[str, list[dict]]:
    app = make_app(pg_db, "memory://", smtp_server.url)
    try:
        load(app, bundle([contact(i) for i in range(contacts)]))
        with app.sessions.begin() as session:
            campaign_id = campaign_service.create(session, email_payload(), 1).id
        with captured() as entries, in_process_worker(app) as actors:
            actors.enqueue_dispatch(campaign_id)
            app.broker.join(CAMPAIGNS_QUEUE, timeout=30_000)
            app.broker.join(DELIVERY_QUEUE, timeout=30_000)
        with app.sessions() as session:
            assert session.get(Campaign, campaign_id).status == "completed"
        return campaign_id, list(entries)
    finally:
        app.close()


def test_dispatch_and_delivery_lines_carry_the_campaign_actor_and_message(pg_db, smtp_server):
    campaign_id, entries = _run_campaign(pg_db, smtp_server, contacts=15)  # two delivery batches of 10

    (done,) = [e for e in entries if e["event"] == "dispatch.done"]
    assert done["campaign_id"] == campaign_id
    assert done["actor"] == "dispatch_campaign"
    assert isinstance(done["message_id"], str) and done["message_id"]
    assert (done["recipients"], done["batches"]) == (15, 2)

    batches = [e for e in entries if e["event"] == "deliver.batch"]
    assert len(batches) == 2
    assert sum(e["sent"] for e in batches) == 15
    for entry in batches:
        assert entry["campaign_id"] == campaign_id
        assert entry["actor"] == "deliver_batch"
        assert isinstance(entry["message_id"], str) and entry["message_id"]
    # Each message's lines name that message: two batches, two messages, neither the dispatch's.
    assert len({e["message_id"] for e in batches} | {done["message_id"]}) == 3


def test_every_line_written_inside_an_actor_names_its_campaign(pg_db, smtp_server):
    campaign_id, entries = _run_campaign(pg_db, smtp_server, contacts=3)
    in_actor = [e for e in entries if "actor" in e]
    assert {e["event"] for e in in_actor} >= {"dispatch.done", "deliver.batch", "campaign.finalised"}
    assert [e["event"] for e in in_actor if e.get("campaign_id") != campaign_id] == []
    assert {e["actor"] for e in in_actor} == {"dispatch_campaign", "deliver_batch"}


def test_a_message_does_not_inherit_the_previous_messages_context(pg_db, smtp_server):
    # One worker thread runs every message, so a probe actor sent after the campaign's messages runs
    # on the thread that bound their campaign_id: LogContext must have cleared it.
    app = make_app(pg_db, "memory://", smtp_server.url)
    try:
        load(app, bundle([contact(i) for i in range(2)]))
        with app.sessions.begin() as session:
            campaign_id = campaign_service.create(session, email_payload(), 1).id
        app.actors  # the real actors first, then a probe on the same broker
        probe = dramatiq.actor(lambda: structlog.get_logger().info("probe.ran"), broker=app.broker,
                               queue_name=DEFAULT_QUEUE, actor_name="probe", max_retries=0)
        with captured() as entries, in_process_worker(app, threads=1) as actors:
            actors.enqueue_dispatch(campaign_id)
            app.broker.join(CAMPAIGNS_QUEUE, timeout=30_000)
            app.broker.join(DELIVERY_QUEUE, timeout=30_000)
            message = probe.send()
            app.broker.join(DEFAULT_QUEUE, timeout=30_000)
    finally:
        app.close()
    assert any(e.get("campaign_id") == campaign_id for e in entries)  # the campaign's lines were bound
    (line,) = [e for e in entries if e["event"] == "probe.ran"]
    assert (line["actor"], line["message_id"]) == ("probe", message.message_id)
    assert "campaign_id" not in line


def test_a_refused_message_logs_why_not_only_the_exception_type(pg_db, smtp_server):
    # A producer's invalid test-email payload: the message ends at once (no retry), and the line
    # says which fields were wrong, so the producer can be told.
    app = make_app(pg_db, "memory://", smtp_server.url)
    try:
        load(app, bundle([contact(0)]))
        with captured() as entries, in_process_worker(app, threads=1) as actors:
            message = actors.send_test_email.send("someone@example.com", None, {"type": "email", "name": ""}, 1)
            app.broker.join(DEFAULT_QUEUE, timeout=30_000, fail_fast=False)  # the stub would re-raise it
    finally:
        app.close()
    (line,) = [e for e in entries if e["event"] == "actor.refused"]
    assert line["actor"] == "send_test_email" and line["message_id"] == message.message_id
    assert line["log_level"] == "warning" and "name" in line["errors"], line
    assert smtp_server.messages == []
