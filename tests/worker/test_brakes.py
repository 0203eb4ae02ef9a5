"""Brakes and the worker looking between rounds: pause and cancel bite within one SMTP round of each
thread, resume goes on at once and sends each recipient once, a fault of the whole campaign pauses it
with a sentence saying what to fix, and a database outage mid-send repeats nothing."""

from __future__ import annotations

import asyncio
import collections
import socket
import threading
import time
from email import policy
from email.parser import BytesParser

from sqlalchemy import func, select, update

from storage import lifecycle
from storage.models import Campaign, CampaignSettings, Recipient
from storage.timefmt import now
from tests.e2e import FINAL, bundle, contact, drive, email_payload, in_process_worker, load, make_app
from tests.smtpserver import SmtpTestServer
from worker.pipeline import campaign_service

THREADS = 4


class SlowSmtp(SmtpTestServer):
    """Takes ``delay`` seconds to accept each message, so a campaign lasts long enough to act on."""

    delay = 0.03

    async def handle_DATA(self, server, session, envelope) -> str:
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


def _wait(predicate, timeout: float = 60.0, what: str = "condition", state=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} {state()}")
        time.sleep(0.02)


def _status(app, campaign_id: str) -> tuple[str, str | None]:
    with app.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        return campaign.status, campaign.error


def _rows(app, campaign_id: str) -> dict[str, int]:
    with app.sessions() as session:
        return dict(session.execute(select(Recipient.status, func.count()).where(
            Recipient.campaign_id == campaign_id).group_by(Recipient.status)).all())


def _deliveries(server: SmtpTestServer) -> tuple[collections.Counter, dict[str, set[str]]]:
    counts, ids = collections.Counter(), collections.defaultdict(set)
    for received in list(server.messages):
        parsed = BytesParser(policy=policy.default).parsebytes(received.data, headersonly=True)
        for rcpt in received.rcpt_tos:
            counts[rcpt] += 1
            ids[rcpt].add(parsed["Message-ID"])
    return counts, ids


def _campaign(app, n: int) -> str:
    load(app, bundle([contact(i) for i in range(n)]))
    with app.sessions.begin() as session:
        return campaign_service.create(session, email_payload(), 1).id


def test_pause_bites_within_a_round_and_resume_sends_everyone_once(pg_db, redis_url):
    n = 240
    with SlowSmtp() as server:
        app = make_app(pg_db, redis_url, server.url, delivery_batch_size=40, smtp_pool_size=4)
        campaign_id = _campaign(app, n)
        with in_process_worker(app, threads=THREADS) as actors:
            actors.enqueue_dispatch(campaign_id)
            _wait(lambda: len(server.messages) >= 30, what="the campaign to get going")
            with app.sessions.begin() as session:
                lifecycle.pause(session, session.get(Campaign, campaign_id), now())
            at_pause = len(server.messages)
            time.sleep(2.0)
            after_pause = len(server.messages) - at_pause
            # each thread finishes the round it had on the wire, no more
            assert after_pause <= THREADS * app.round_size, after_pause
            assert _status(app, campaign_id)[0] == "paused"
            assert "sending" not in _rows(app, campaign_id)  # the rows not attempted were given back
            assert len(server.messages) < n
            with app.sessions.begin() as session:
                lifecycle.resume(session, session.get(Campaign, campaign_id), now())
            app.dispatcher.resume(campaign_id)  # what `campaigns resume` does: no wait for a stall
            _wait(lambda: _status(app, campaign_id)[0] in FINAL, what="completion after resume",
                  state=lambda: (_rows(app, campaign_id), _status(app, campaign_id)))
        counts, ids = _deliveries(server)
    assert _status(app, campaign_id) == ("completed", None)
    assert set(counts) == {f"person{i}@example.com" for i in range(n)} and set(counts.values()) == {1}
    app.close()


def test_cancel_bites_within_a_round(pg_db, redis_url):
    n = 240
    with SlowSmtp() as server:
        app = make_app(pg_db, redis_url, server.url, delivery_batch_size=40, smtp_pool_size=4)
        campaign_id = _campaign(app, n)
        with in_process_worker(app, threads=THREADS) as actors:
            actors.enqueue_dispatch(campaign_id)
            _wait(lambda: len(server.messages) >= 30, what="the campaign to get going")
            with app.sessions.begin() as session:
                lifecycle.cancel(session, session.get(Campaign, campaign_id), now())
            at_cancel = len(server.messages)
            time.sleep(2.0)
            assert len(server.messages) - at_cancel <= THREADS * app.round_size
            drive(app, campaign_id)
            _wait(lambda: "sending" not in _rows(app, campaign_id), what="rows given back")
        rows = _rows(app, campaign_id)
    assert rows.get("sent", 0) == len(server.messages) and rows["sent"] + rows["skipped"] == n
    app.close()


def test_a_sending_domain_removed_mid_send_brakes_and_resume_goes_on(pg_db, redis_url):
    n = 200
    with SlowSmtp() as server:
        app = make_app(pg_db, redis_url, server.url, delivery_batch_size=20, smtp_pool_size=4)
        campaign_id = _campaign(app, n)
        with in_process_worker(app, threads=THREADS) as actors:
            actors.enqueue_dispatch(campaign_id)
            _wait(lambda: len(server.messages) >= 20, what="the campaign to get going")
            with app.sessions.begin() as session:
                session.execute(update(CampaignSettings).values(domain=None, domain_slug=None))
            _wait(lambda: _status(app, campaign_id)[0] == "paused", timeout=60, what="the brake")
            status, error = _status(app, campaign_id)
            assert "domain" in error and f"campaigns resume {campaign_id}" in error, error
            time.sleep(1.0)
            stopped_at = len(server.messages)
            time.sleep(1.0)
            assert len(server.messages) == stopped_at  # nothing leaves while paused
            assert stopped_at < n
            with app.sessions.begin() as session:
                session.execute(update(CampaignSettings).values(domain_slug="acme"))
                lifecycle.resume(session, session.get(Campaign, campaign_id), now())
            app.dispatcher.resume(campaign_id)
            _wait(lambda: _status(app, campaign_id)[0] in FINAL, what="completion after resume")
        counts, _ = _deliveries(server)
    assert _status(app, campaign_id) == ("completed", None)
    assert set(counts.values()) == {1} and len(counts) == n
    app.close()


def test_max_send_errors_pauses_the_campaign(pg_db, redis_url):
    with SmtpTestServer() as server:
        for i in range(30):
            server.script(f"person{i}@example.com", "550 5.1.1 no such user", times=None)
        app = make_app(pg_db, redis_url, server.url, delivery_batch_size=10, max_send_errors=5)
        campaign_id = _campaign(app, 60)
        with in_process_worker(app, threads=2) as actors:
            actors.enqueue_dispatch(campaign_id)
            _wait(lambda: _status(app, campaign_id)[0] == "paused", timeout=30, what="the brake")
        status, error = _status(app, campaign_id)
    assert "MAX_SEND_ERRORS=5" in error and "campaigns recipients" in error
    assert _rows(app, campaign_id)["failed"] >= 5
    app.close()


class Proxy:
    """A TCP proxy in the test process: the database "goes down" when it stops forwarding."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            server = socket.create_connection(self.target)
            with self._lock:
                self._pairs.append((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def down(self) -> None:
        self.up = False
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self.down()
        self.listener.close()


def test_a_database_outage_mid_send_repeats_nothing_that_was_recorded(pg_db, redis_url):
    n = 300
    proxy = Proxy(5432)
    proxied = pg_db.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    with SlowSmtp() as server:
        checker = make_app(pg_db, redis_url, server.url)
        app = make_app(proxied, redis_url, server.url, delivery_batch_size=50, smtp_pool_size=4)
        campaign_id = _campaign(checker, n)
        try:
            with in_process_worker(app, threads=THREADS) as actors:
                actors.enqueue_dispatch(campaign_id)
                _wait(lambda: len(server.messages) >= 40, what="the campaign to get going")
                proxy.down()
                time.sleep(5.0)  # PostgreSQL unreachable for 5 s while messages are on the wire
                proxy.up = True
                drive(checker, campaign_id, timeout=90)  # reconcile takes back what a failed message held
        finally:
            proxy.close()
        counts, ids = _deliveries(server)
    assert _status(checker, campaign_id)[0] == "completed"
    assert len(counts) == n and all(len(v) == 1 for v in ids.values())
    repeats = sum(counts.values()) - n
    assert repeats <= app.settings.smtp_pool_size, repeats  # only what was on the wire at the fault
    checker.close()
    app.close()


def test_a_refused_login_brakes_at_once_and_resume_with_the_right_password_sends_everyone_once(pg_db, redis_url):
    n = 120
    with SmtpTestServer(credentials=("mailer", "right")) as server:
        wrong = server.url.replace("mailer:right@", "mailer:wrong@")
        app = make_app(pg_db, redis_url, wrong, delivery_batch_size=20)
        campaign_id = _campaign(app, n)
        with in_process_worker(app, threads=THREADS) as actors:
            actors.enqueue_dispatch(campaign_id)
            _wait(lambda: _status(app, campaign_id)[0] == "paused", timeout=60, what="the brake")
            time.sleep(1.0)
        status, error = _status(app, campaign_id)
        assert "refused our login" in error and "SMTP_URL" in error and "wrong" not in error, error
        assert server.messages == [] and server.connections < 50, server.connections
        assert _rows(app, campaign_id) == {"pending": n}  # nobody failed for the relay's refusal
        app.close()

        fixed = make_app(pg_db, redis_url, server.url)  # the workers restarted with the right password
        with in_process_worker(fixed, threads=THREADS):
            with fixed.sessions.begin() as session:
                lifecycle.resume(session, session.get(Campaign, campaign_id), now())
            fixed.dispatcher.resume(campaign_id)
            _wait(lambda: _status(fixed, campaign_id)[0] in FINAL, what="completion after resume")
        counts, _ = _deliveries(server)
    assert _status(fixed, campaign_id) == ("completed", None)
    assert len(counts) == n and set(counts.values()) == {1}
    fixed.close()


def test_an_unreachable_relay_brakes_within_its_retry_budget(pg_db, redis_url):
    with SmtpTestServer() as server:
        url = server.url
    # nothing listens there any more
    app = make_app(pg_db, redis_url, url, delivery_batch_size=20)
    campaign_id = _campaign(app, 60)
    with in_process_worker(app, threads=THREADS) as actors:
        actors.enqueue_dispatch(campaign_id)
        _wait(lambda: _status(app, campaign_id)[0] == "paused", timeout=60, what="the brake")
    status, error = _status(app, campaign_id)
    assert "cannot be reached" in error and "SMTP_URL" in error, error
    assert _rows(app, campaign_id) == {"pending": 60}
    app.close()


def test_a_template_that_stops_compiling_mid_send_brakes(pg_db, redis_url):
    from storage.models import Template

    with SlowSmtp() as server:
        app = make_app(pg_db, redis_url, server.url, delivery_batch_size=20, smtp_pool_size=4)
        campaign_id = _campaign(app, 160)
        with in_process_worker(app, threads=THREADS) as actors:
            actors.enqueue_dispatch(campaign_id)
            _wait(lambda: len(server.messages) >= 20, what="the campaign to get going")
            with app.sessions.begin() as session:  # someone edits the shared template in the CRM
                session.execute(update(Template).where(Template.id == 2).values(content="<p>{{ content </p>"))
            _wait(lambda: _status(app, campaign_id)[0] == "paused", timeout=60, what="the brake")
        status, error = _status(app, campaign_id)
    assert error.startswith("Paused: ") and "template" in error.lower(), error
    rows = _rows(app, campaign_id)
    assert "sending" not in rows and rows.get("failed", 0) == 0  # nobody failed for the campaign's fault
    app.close()
