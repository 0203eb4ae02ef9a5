"""Prometheus metrics (worker/runtime/metrics.py) against the real parts: an email and a letter campaign
through the Redis broker, a worker, PostgreSQL and an SMTP server, scraped from ``start_metrics_server``
while and after they run; /healthz; the port rule; several processes behind one endpoint."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from storage.models import Recipient
from storage.statuses import CampaignStatus
from tests.e2e import FINAL, bundle, contact, drive, email_payload, in_process_worker, load, make_app
from tests.smtpserver import free_port
from worker.pipeline import campaign_service
from worker.pipeline.actors import QUEUES
from worker.pipeline.status import queue_depths
from worker.runtime import metrics
from worker.runtime.metrics import StateCollector, registry_factory_for, start_metrics_server

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> Samples:
    status, text = get(port, "/metrics")
    assert status == 200, text
    return parse(text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def recipients(samples: Samples, channel: str) -> dict[str, float]:
    return {outcome: value(samples, "campaign_dispatch_recipients_total", channel=channel, outcome=outcome)
            for outcome in metrics.OUTCOMES}


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


def ledger(app, campaign_id: str) -> dict[str, int]:
    with app.sessions() as session:
        return dict(session.execute(select(Recipient.status, func.count()).where(
            Recipient.campaign_id == campaign_id).group_by(Recipient.status)).all())


def dependency_health(app, broker: dict[str, str]):
    """A health callable of the shape the service hands in: the database and the broker answer."""

    def health() -> tuple[bool, list[str]]:
        ok, lines = True, []
        try:
            with app.engine.connect():
                lines.append("database: ok")
        except Exception as exc:  # noqa: BLE001
            ok = False
            lines.append(f"database: unreachable ({type(exc).__name__})")
        client = redis.Redis.from_url(broker["url"], socket_connect_timeout=1, socket_timeout=1)
        try:
            client.ping()
            lines.append("broker: ok")
        except redis.RedisError as exc:
            ok = False
            lines.append(f"broker: unreachable ({type(exc).__name__})")
        finally:
            client.close()
        return ok, lines

    return health


class Scraper(threading.Thread):
    """Scrapes every 50 ms until stopped: what the endpoint showed while the campaign ran."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.stop, self.seen, self.errors = port, threading.Event(), [], []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.seen.append(scrape(self.port))
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(exc)
            self.stop.wait(0.05)


def test_email_campaign_counted_timed_and_gauged_while_and_after_it_runs(pg_db, redis_url, smtp_server):
    app = make_app(pg_db, redis_url, smtp_server.url)
    contacts = [contact(i) for i in range(20)]
    contacts += [contact(100, consent_email=False), contact(101, email=None), contact(102, email="not an address")]
    load(app, bundle(contacts))
    smtp_server.script("person3@example.com", "550 no such user", times=None)  # failed
    smtp_server.script("person2@example.com", "451 greylisted", times=5)  # outlasts the batch's retries: retried
    broker = {"url": redis_url}
    state = StateCollector.for_service(app.engine, redis_url, queue_depths)
    served = start_metrics_server(0, health=dependency_health(app, broker),
                                  registry_factory=registry_factory_for(state))
    try:
        port = served.port
        before = scrape(port)
        smtp_before = value(before, "campaign_dispatch_smtp_send_seconds_count")
        render_before = value(before, "campaign_dispatch_render_seconds_count", channel="email")
        with app.sessions.begin() as session:
            campaign_id = campaign_service.create(session, email_payload(), 1).id
        scraper = Scraper(port)
        with in_process_worker(app):
            scraper.start()
            try:
                assert drive(app, campaign_id) == "completed"
            finally:
                scraper.stop.set()
                scraper.join(10)
        after = scrape(port)

        # while it ran: every scrape parsed, counters never went back, the campaign seen sending part-way
        assert scraper.errors == [] and len(scraper.seen) > 3
        series = [recipients(s, "email") for s in [before, *scraper.seen, after]]
        for earlier, later in zip(series, series[1:]):
            assert all(later[k] >= earlier[k] for k in earlier)
        counted = delta(series[-1], series[0])
        sending = [s for s in scraper.seen if value(s, "campaign_dispatch_campaigns", status="sending") == 1]
        assert sending and min(delta(recipients(s, "email"), series[0])["sent"] for s in sending) < counted["sent"]

        # after: the counts are the ledger's; the retry was counted once; nothing on other channels
        rows = ledger(app, campaign_id)
        assert rows == {"sent": 19, "failed": 1, "skipped": 3}
        assert counted == {"sent": 19, "failed": 1, "skipped": 3, "retried": 1}
        assert delta(recipients(after, "letter"), recipients(before, "letter")) == dict.fromkeys(metrics.OUTCOMES, 0)
        # one SMTP transaction per message accepted, plus those refused: the 550 once, the 451 five times
        assert len(smtp_server.messages) == 19
        assert value(after, "campaign_dispatch_smtp_send_seconds_count") - smtp_before == 19 + 1 + 5
        smtp_sum = "campaign_dispatch_smtp_send_seconds_sum"
        assert value(after, smtp_sum) > value(before, smtp_sum)
        # each message rendered once per delivery attempt: 20 recipients, the retried one twice
        assert value(after, "campaign_dispatch_render_seconds_count", channel="email") - render_before == 21

        # the gauges read at scrape time: every queue and state, every campaign status
        queue_labels = {dict(labels)["queue"] + "/" + dict(labels)["state"]
                        for name, labels in after if name == "campaign_dispatch_queue_messages"}
        assert queue_labels == {f"{q}/{s}" for q in QUEUES for s in ("ready", "delayed", "dead")}
        assert value(after, "campaign_dispatch_queue_messages", queue="delivery", state="dead") == 0
        assert {status: value(after, "campaign_dispatch_campaigns", status=status) for status in CampaignStatus} == {
            **dict.fromkeys(CampaignStatus, 0.0), "completed": 1.0}

        # /healthz: 200 with the lines while both answer, 503 naming the broker once it does not
        status, text = get(port, "/healthz")
        assert status == 200 and text.splitlines() == ["database: ok", "broker: ok"]
        broker["url"] = f"redis://127.0.0.1:{free_port()}/0"
        status, text = get(port, "/healthz")
        assert status == 503 and "broker: unreachable" in text and "database: ok" in text
        assert get(port, "/nothing")[0] == 404
    finally:
        served.close()

    # the API's /metrics serves the same registry and the same scrape-time gauges
    from tests.worker.api.conftest import serve

    for api in serve(app):
        text = api.anonymous().get("/metrics").text
        from_api = parse(text)
        assert recipients(from_api, "email") == recipients(after, "email")
        assert value(from_api, "campaign_dispatch_campaigns", status="completed") == 1
        assert value(from_api, "campaign_dispatch_queue_messages", queue="delivery", state="ready") == 0
    app.close()


def test_letter_campaign_counted_and_render_timed_per_letter(pg_db, redis_url, smtp_server, tmp_path):
    app = make_app(pg_db, redis_url, smtp_server.url, storage_url=f"file://{tmp_path / 'objects'}")
    data = bundle([contact(i, address=f"Vestergade {i}", city="Aarhus") for i in range(3)]
                  + [contact(11, address=None, city="Odense")])
    data["templates"].append({"id": 3, "type": "letter", "company_id": 1, "title": "Letter", "user_id": 1,
                              "content": "<html><body>{{ content }}</body></html>"})
    load(app, data)
    payload = {"name": "Letter", "type": "letter", "approved": True, "execute_now": True, "template_id": 3,
               "message": {"content": "<p>Dear {{ contact.first_name }}, {{ contact.address }}</p>"},
               "filter": [{"field": "contact.fixed_fields.city", "operator": "nempty"}]}
    with start_metrics_server(0) as served:
        before = scrape(served.port)
        with app.sessions.begin() as session:
            campaign_id = campaign_service.create(session, payload, 1).id
        with in_process_worker(app):
            assert drive(app, campaign_id) in FINAL
        after = scrape(served.port)
    try:
        assert ledger(app, campaign_id) == {"sent": 3, "skipped": 1}
        assert delta(recipients(after, "letter"), recipients(before, "letter")) == {
            "sent": 3, "failed": 0, "skipped": 1, "retried": 0}
        # each letter observed once, as its share of its batch's rendering
        count = "campaign_dispatch_render_seconds_count"
        assert value(after, count, channel="letter") - value(before, count, channel="letter") == 3
        total = "campaign_dispatch_render_seconds_sum"
        assert value(after, total, channel="letter") > value(before, total, channel="letter")
        # no state collector handed in: only the process's own metrics
        assert not any(name.startswith("campaign_dispatch_campaigns") for name, _ in after)
    finally:
        app.close()


def test_healthz_without_a_health_callable_and_when_it_breaks():
    with start_metrics_server(0) as served:
        assert get(served.port, "/healthz") == (200, "ok\n")

    def broken() -> tuple[bool, list[str]]:
        raise RuntimeError("no")

    with start_metrics_server(0, health=broken) as served:
        status, text = get(served.port, "/healthz")
        assert status == 503 and "RuntimeError" in text


def _listening(port: int) -> socket.socket | None:
    sock = socket.socket()
    try:
        sock.bind(("0.0.0.0", port))
    except OSError:
        sock.close()
        return None
    sock.listen()
    return sock


def test_a_taken_port_moves_to_the_next_one_once():
    """METRICS_PORT is the worker's and the scheduler's: the second on a machine takes the next port."""
    for _ in range(50):
        held = _listening(0)
        port = held.getsockname()[1]
        following = _listening(port + 1) if port < 65535 else None
        if following is None:
            held.close()
            continue
        following.close()
        try:
            with start_metrics_server(port) as served:
                assert served.port == port + 1 and get(served.port, "/healthz")[0] == 200
            following = _listening(port + 1)
            if following is None:  # someone else took it meanwhile: nothing to show
                continue
            try:
                with pytest.raises(OSError):  # both taken: once only
                    start_metrics_server(port)
            finally:
                following.close()
            return
        finally:
            held.close()
    pytest.skip("no two free neighbouring ports")


def _child(counts: int, ready, release) -> None:
    """A worker process: counts, times and holds a live gauge, as the real ones write them."""
    from prometheus_client import Gauge

    from worker.runtime import metrics as m

    m.count_recipients({("email", "sent"): counts, ("letter", "skipped"): 1})
    m.SMTP_SEND_SECONDS.observe(0.01)
    Gauge("campaign_dispatch_test_alive", "test", multiprocess_mode="livesum").set(1)
    ready.put(os.getpid())
    release.wait(60)


def test_several_processes_are_summed_by_one_endpoint(monkeypatch):
    monkeypatch.setenv(metrics.MULTIPROC_ENV, "")  # restored after the test (setenv notes what it was)
    path = metrics.prepare_multiprocess()
    try:
        assert os.environ[metrics.MULTIPROC_ENV] == path and os.listdir(path) == []
        ctx = multiprocessing.get_context("spawn")  # as supervise() starts worker processes
        ready, release = ctx.Queue(), ctx.Event()
        children = [ctx.Process(target=_child, args=(n, ready, release)) for n in (3, 4)]
        for child in children:
            child.start()
        pids = {ready.get(timeout=60) for _ in children}
        with start_metrics_server(0) as served:  # the supervisor's endpoint: every process's values
            alive = scrape(served.port)
            assert value(alive, "campaign_dispatch_recipients_total", channel="email", outcome="sent") == 7
            assert value(alive, "campaign_dispatch_recipients_total", channel="letter", outcome="skipped") == 2
            assert value(alive, "campaign_dispatch_smtp_send_seconds_count") == 2
            assert value(alive, "campaign_dispatch_test_alive") == 2
            release.set()
            for child in children:
                child.join(30)
                assert child.exitcode == 0
            gone = scrape(served.port)
            # the exited processes' counts stay in the totals; their live gauges are dropped
            assert value(gone, "campaign_dispatch_recipients_total", channel="email", outcome="sent") == 7
            assert value(gone, "campaign_dispatch_smtp_send_seconds_count") == 2
            assert value(gone, "campaign_dispatch_test_alive") == 0
            assert not [f for f in os.listdir(path) if f.startswith("gauge_live")]
            assert {int(f.rsplit("_", 1)[1][:-3]) for f in os.listdir(path)} >= pids
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_starting_the_cli_does_not_import_prometheus_client():
    code = "import sys, worker.cli.main; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_a_multiprocess_folder_that_is_gone_is_made_again(tmp_path):
    """A stale PROMETHEUS_MULTIPROC_DIR (its supervisor gone) must not break the worker's sending."""
    folder = tmp_path / "gone"
    code = ("from worker.runtime import metrics; metrics.count_recipients({('email', 'sent'): 1}); "
            "metrics.SMTP_SEND_SECONDS.observe(0.01)")
    subprocess.run([sys.executable, "-c", code], env={**os.environ, metrics.MULTIPROC_ENV: str(folder)},
                   check=True, timeout=60)
    assert {f.name.split("_")[0] for f in folder.iterdir()} == {"counter", "histogram"}
