"""The composition root: one broker per App, one dispatcher for both doors, WeasyPrint hooks as
set, and a campaign compiled once while it sends."""

from __future__ import annotations

from datetime import timedelta

from storage import ledger
from storage.models import Campaign
from storage.timefmt import now
from tests.e2e import bundle, contact, email_payload, in_process_worker, load, make_app
from worker.pipeline import campaign_service
from worker.pipeline.dispatcher import InlineDispatcher, QueuedDispatcher


def test_one_broker_and_one_set_of_actors_per_app(pg_db, redis_url):
    app = make_app(pg_db, redis_url, None)
    try:
        assert app.broker is app.broker and app.actors is app.actors
        assert app.actors.broker is app.broker
        assert isinstance(app.dispatcher, QueuedDispatcher)  # Redis: a worker elsewhere takes it
    finally:
        app.close()


def test_memory_broker_dispatches_inline_unless_a_worker_runs_here(pg_db):
    app = make_app(pg_db, "memory://", None)
    try:
        assert isinstance(app.dispatcher, InlineDispatcher)  # nothing in this process would consume it
        with in_process_worker(app):
            assert isinstance(app.dispatcher, QueuedDispatcher)  # `run`: this process consumes it
        assert isinstance(app.dispatcher, InlineDispatcher)
    finally:
        app.close()


def test_the_worker_installs_the_weasyprint_hooks_as_set(pg_db, redis_url):
    from renderers import pdf_hooks

    try:
        for enabled in (False, True):
            app = make_app(pg_db, redis_url, None, weasyprint_hooks=enabled)
            with in_process_worker(app):
                assert pdf_hooks.active() == {"linecache": enabled, "release": enabled}
            app.close()
    finally:
        pdf_hooks.uninstall()


def test_a_campaign_is_compiled_once_while_its_progress_moves(pg_db, redis_url):
    app = make_app(pg_db, redis_url, None)
    load(app, bundle([contact(1)]))
    with app.sessions.begin() as session:
        campaign_id = campaign_service.create(session, email_payload(), 1).id
    cache = app.runtimes
    with app.sessions() as session:
        first = cache.get(session, session.get(Campaign, campaign_id), "example.com")
    for _ in range(3):  # every recorded batch notes progress, which moves updated_at
        with app.sessions.begin() as session:
            ledger.touch_progress(session, campaign_id, now(), every=timedelta(0))
        with app.sessions() as session:
            assert cache.get(session, session.get(Campaign, campaign_id), "example.com") is first
    assert cache.builds == 1
    with app.sessions.begin() as session:  # what rendering reads changed: compiled again
        session.get(Campaign, campaign_id).message = {**email_payload()["message"], "subject": "New subject"}
    with app.sessions() as session:
        again = cache.get(session, session.get(Campaign, campaign_id), "example.com")
    assert again is not first and cache.builds == 2
    app.close()
