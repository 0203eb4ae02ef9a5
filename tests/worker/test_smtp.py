"""SMTP delivery against a real aiosmtpd server, with and without PIPELINING: reuse, explicit envelopes,
retry and errors."""

from __future__ import annotations

import asyncio
import socket
import threading
from email import message_from_bytes

import pytest

from tests.smtpserver import DROP, SmtpTestServer
from worker.channels.smtp import (
    CampaignWideSmtpError,
    OutgoingMail,
    PermanentSmtpError,
    RelayUnreachable,
    SendResult,
    SmtpConfig,
    SmtpLoginRefused,
    SmtpPool,
    SmtpSender,
    TransientSmtpError,
)

FAST_RETRY = (0.01, 0.02, 0.04)


def mail(to: str, subject: str = "Hello", sender: str = "news@acme.example") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}.{to}@acme.example>\r\n\r\nHi {to}\r\n").encode()


def outgoing(rcpt: str, subject: str = "Hello") -> OutgoingMail:
    return OutgoingMail("bounce@acme.example", [rcpt], mail(rcpt, subject))


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(params=[False, True], ids=["one-command-at-a-time", "pipelining"])
def smtp_server(request):
    """Every test here runs against a relay without PIPELINING (commands one at a time, as aiosmtpd
    offers) and one with it (MAIL, RCPT and DATA in one write)."""
    with SmtpTestServer(pipelining=request.param) as server:
        yield server


# -- SMTP_URL ----------------------------------------------------------------------------------

def test_url_plain_host_and_port():
    cfg = SmtpConfig.from_url("smtp://mail.example.com:2525")
    assert (cfg.host, cfg.port, cfg.username, cfg.password) == ("mail.example.com", 2525, None, None)
    assert not cfg.use_tls and not cfg.start_tls


def test_url_credentials_are_percent_decoded_and_starttls():
    cfg = SmtpConfig.from_url("smtp://user%40acme.example:p%3Ass%2Fw%20rd@relay.example:587?starttls=true")
    assert cfg.username == "user@acme.example"
    assert cfg.password == "p:ss/w rd"
    assert (cfg.port, cfg.start_tls, cfg.use_tls) == (587, True, False)
    assert "p:ss" not in repr(cfg) and "p:ss" not in cfg.safe_url


def test_url_smtps_is_implicit_tls_on_465_by_default():
    cfg = SmtpConfig.from_url("smtps://relay.example")
    assert (cfg.port, cfg.use_tls, cfg.start_tls) == (465, True, False)


@pytest.mark.parametrize("url", [
    "http://relay.example:25",
    "relay.example:25",
    "smtp://:25",
    "smtp://relay.example:notaport",
    "smtp://relay.example:70000",
    "smtp://relay.example:25/path",
    "smtp://relay.example:25?starttls=maybe",
    "smtp://relay.example:25?tls=true",
    "smtps://relay.example?starttls=true",
    "smtp://onlyuser@relay.example:25",
    "smtp://:secret@relay.example:25",
])
def test_bad_url_is_a_value_error_naming_smtp_url(url):
    with pytest.raises(ValueError, match="SMTP_URL") as info:
        SmtpConfig.from_url(url)
    assert "secret" not in str(info.value)


# -- the pool ----------------------------------------------------------------------------------

def test_200_messages_over_at_most_4_reused_connections(smtp_server):
    recipients = [f"user{i}@example.com" for i in range(200)]

    async def send_all():
        pool = SmtpPool(SmtpConfig.from_url(smtp_server.url), size=4)
        try:
            return await asyncio.gather(*(pool.send("bounce@acme.example", [r], mail(r)) for r in recipients))
        finally:
            await pool.close()

    results = run(send_all())
    assert all(isinstance(r, SendResult) and r.accepted == (r_,) for r, r_ in zip(results, recipients))
    assert 1 <= smtp_server.connections <= 4
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == sorted(recipients)


def test_envelope_is_exactly_what_was_passed_not_the_headers(smtp_server):
    message = mail("Someone Else <header-only@example.com>", sender="display@acme.example")

    async def send():
        pool = SmtpPool(SmtpConfig.from_url(smtp_server.url), size=1)
        try:
            return await pool.send("bounces+42@acme.example", ["real@example.com", "cc@example.com"], message)
        finally:
            await pool.close()

    result = run(send())
    assert result.accepted == ("real@example.com", "cc@example.com")
    (received,) = smtp_server.messages
    assert received.envelope_from == "bounces+42@acme.example"
    assert received.rcpt_tos == ("real@example.com", "cc@example.com")
    assert message_from_bytes(received.data)["To"] == "Someone Else <header-only@example.com>"


def test_one_refused_recipient_of_a_message_is_reported_and_the_others_get_it(smtp_server):
    smtp_server.script("gone@example.com", "550 5.1.1 no such user")

    async def send():
        pool = SmtpPool(SmtpConfig.from_url(smtp_server.url), size=1)
        try:
            return await pool.send("b@acme.example", ["gone@example.com", "here@example.com"], mail("x"))
        finally:
            await pool.close()

    result = run(send())
    assert result.accepted == ("here@example.com",)
    assert result.refused == {"gone@example.com": (550, "5.1.1 no such user")}
    assert [m.rcpt_tos for m in smtp_server.messages] == [("here@example.com",)]


def test_pool_classifies_4xx_as_transient_and_keeps_working(smtp_server):
    smtp_server.script("busy@example.com", "421 try later")

    async def send():
        pool = SmtpPool(SmtpConfig.from_url(smtp_server.url), size=2)
        try:
            with pytest.raises(TransientSmtpError) as info:
                await pool.send("b@acme.example", ["busy@example.com"], mail("busy@example.com"))
            return info.value, await pool.send("b@acme.example", ["busy@example.com"], mail("busy@example.com"))
        finally:
            await pool.close()

    error, result = run(send())
    assert (error.code, str(error)) == (421, "421 try later")
    assert result.accepted == ("busy@example.com",)
    assert len(smtp_server.delivered_to("busy@example.com")) == 1


def test_connection_refused_is_relay_unreachable_naming_smtp_url():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def send():
        pool = SmtpPool(SmtpConfig.from_url(f"smtp://127.0.0.1:{port}?timeout=5"), size=1)
        await pool.send("b@acme.example", ["a@example.com"], mail("a@example.com"))

    with pytest.raises(RelayUnreachable) as info:
        run(send())
    assert str(info.value) == (f"the SMTP server at smtp://127.0.0.1:{port} cannot be reached (connection refused): "
                               "check that it runs and SMTP_URL points at it")
    assert isinstance(info.value, CampaignWideSmtpError) and not isinstance(info.value, TransientSmtpError)


def test_connection_closed_by_a_restarted_server_is_replaced_without_error(smtp_server):
    async def send_twice():
        pool = SmtpPool(SmtpConfig.from_url(smtp_server.url), size=1)
        try:
            await pool.send("b@acme.example", ["one@example.com"], mail("one@example.com"))
            await asyncio.to_thread(smtp_server.stop)  # closes our idle connection
            await asyncio.to_thread(smtp_server.start)  # same port
            await asyncio.sleep(0.05)
            return await pool.send("b@acme.example", ["two@example.com"], mail("two@example.com"))
        finally:
            await pool.close()

    assert run(send_twice()).accepted == ("two@example.com",)
    assert smtp_server.delivered_to("two@example.com")
    assert smtp_server.connections == 1  # counted since the restart: a fresh connection


def test_international_addresses_and_8bit_body(smtp_server):
    rcpt = "josé@exämple.com"
    body = "From: news@acme.example\r\nSubject: Grüße\r\nContent-Type: text/plain; charset=utf-8\r\n" \
           "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße, José\r\n"

    with SmtpSender(SmtpConfig.from_url(smtp_server.url), retry_delays=()) as sender:
        sender.send("bounce@acme.example", [rcpt], body.encode())
    (received,) = smtp_server.messages
    assert received.rcpt_tos == (rcpt,)
    assert "Grüße, José" in received.data.decode()


# -- the synchronous sender --------------------------------------------------------------------

def test_421_twice_then_success_is_delivered_once_after_retrying(smtp_server):
    smtp_server.script("slow@example.com", "421 4.7.0 try later", times=2)
    with SmtpSender(SmtpConfig.from_url(smtp_server.url), retry_delays=FAST_RETRY) as sender:
        result = sender.send("bounce@acme.example", ["slow@example.com"], mail("slow@example.com"))
    assert result.attempts == 3
    assert len(smtp_server.delivered_to("slow@example.com")) == 1


def test_transient_error_is_returned_when_retries_run_out(smtp_server):
    smtp_server.script("slow@example.com", "451 later", times=None)
    with SmtpSender(SmtpConfig.from_url(smtp_server.url), retry_delays=FAST_RETRY[:1]) as sender:
        (outcome,) = sender.send_many([outgoing("slow@example.com")])
    assert isinstance(outcome, TransientSmtpError) and str(outcome) == "451 later"
    assert smtp_server.messages == []


def test_550_for_one_recipient_of_a_batch_fails_only_that_one(smtp_server):
    # Scripted once: had the sender retried a permanent error, the retry would have been delivered.
    smtp_server.script("nobody@example.com", "550 no such user")
    rcpts = [f"r{i}@example.com" for i in range(5)] + ["nobody@example.com"] + [f"s{i}@example.com" for i in range(5)]
    with SmtpSender(SmtpConfig.from_url(smtp_server.url), retry_delays=FAST_RETRY) as sender:
        outcomes = sender.send_many([outgoing(r) for r in rcpts])

    failed = outcomes[5]
    assert isinstance(failed, PermanentSmtpError)
    assert str(failed) == "550 no such user" and failed.code == 550 and failed.recipient == "nobody@example.com"
    assert all(isinstance(o, SendResult) and o.accepted == (r,) for o, r in zip(outcomes, rcpts) if o is not failed)
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == sorted(r for r in rcpts if r != "nobody@example.com")


def test_dropped_connection_mid_batch_is_transient_then_recovers(smtp_server):
    smtp_server.script("victim@example.com", DROP)
    rcpts = [f"r{i}@example.com" for i in range(10)] + ["victim@example.com"] + [f"s{i}@example.com" for i in range(10)]
    with SmtpSender(SmtpConfig.from_url(smtp_server.url), pool_size=3, retry_delays=()) as sender:
        outcomes = sender.send_many([outgoing(r) for r in rcpts])
        assert isinstance(outcomes[10], TransientSmtpError)
        assert sum(isinstance(o, SendResult) for o in outcomes) == 20
        assert not smtp_server.delivered_to("victim@example.com")

        (again,) = sender.send_many([outgoing("victim@example.com")])
    assert isinstance(again, SendResult)
    assert len(smtp_server.delivered_to("victim@example.com")) == 1
    assert len(smtp_server.messages) == 21


def test_dropped_connection_after_data_is_retried_within_the_batch(smtp_server):
    smtp_server.script("victim@example.com", DROP, stage="data")
    with SmtpSender(SmtpConfig.from_url(smtp_server.url), retry_delays=FAST_RETRY) as sender:
        (outcome,) = sender.send_many([outgoing("victim@example.com")])
    assert isinstance(outcome, SendResult) and outcome.attempts == 2
    assert len(smtp_server.delivered_to("victim@example.com")) == 1


def test_auth_credentials_from_the_url_reach_the_server():
    user, password = "mailer@acme.example", "p@ss:w/rd %"
    with SmtpTestServer(credentials=(user, password)) as server:
        url = f"smtp://mailer%40acme.example:p%40ss%3Aw%2Frd%20%25@{server.host}:{server.port}"
        with SmtpSender(SmtpConfig.from_url(url), retry_delays=()) as sender:
            outcomes = sender.send_many([outgoing(f"r{i}@example.com") for i in range(3)])
        assert all(isinstance(o, SendResult) for o in outcomes)
        assert len(server.messages) == 3
        assert server.logins and set(server.logins) == {(user, password)}


def test_wrong_password_is_a_refused_login_not_retried_and_sends_nothing():
    with SmtpTestServer(credentials=("mailer", "right")) as server:
        url = f"smtp://mailer:wrong-secret@{server.host}:{server.port}"
        with SmtpSender(SmtpConfig.from_url(url), retry_delays=FAST_RETRY) as sender:
            (outcome,) = sender.send_many([outgoing("r@example.com")])
        assert isinstance(outcome, SmtpLoginRefused) and not isinstance(outcome, TransientSmtpError)
        assert str(outcome) == (f"the SMTP server at smtp://mailer:***@{server.host}:{server.port} refused our login "
                                "(535 5.7.8 Authentication credentials invalid): check the user name and password "
                                "in SMTP_URL")
        assert outcome.code == 535 and "wrong-secret" not in str(outcome)
        assert server.messages == [] and set(server.logins) == {("mailer", "wrong-secret")}
        assert server.connections == 1  # aiosmtplib tries PLAIN then LOGIN on it: no more connections


def test_sender_is_safe_to_share_between_threads(smtp_server):
    with SmtpSender(SmtpConfig.from_url(smtp_server.url), pool_size=4) as sender:
        results: dict[int, list] = {}

        def work(n: int) -> None:
            results[n] = sender.send_many([outgoing(f"t{n}-{i}@example.com") for i in range(25)])

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert all(isinstance(o, SendResult) for outs in results.values() for o in outs)
    assert len({m.rcpt_tos[0] for m in smtp_server.messages}) == len(smtp_server.messages) == 150
    assert smtp_server.connections <= 4


def test_a_connection_is_retired_after_its_message_quota(smtp_server):
    cfg = SmtpConfig.from_url(smtp_server.url)
    with SmtpSender(cfg, pool_size=1, retry_delays=(), max_messages_per_connection=10) as sender:
        outcomes = sender.send_many([outgoing(f"q{i}@example.com") for i in range(25)])
    assert all(isinstance(o, SendResult) for o in outcomes)
    assert len(smtp_server.messages) == 25
    assert smtp_server.connections == 3


def _send_in_child(sender: SmtpSender, rcpt: str, queue) -> None:
    outcome = sender.send_many([outgoing(rcpt)])[0]
    queue.put(type(outcome).__name__)


def test_a_forked_worker_process_gets_its_own_loop_and_connections(smtp_server):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with SmtpSender(SmtpConfig.from_url(smtp_server.url), retry_delays=()) as sender:
        sender.send_many([outgoing("parent@example.com")])  # the parent's loop thread is running
        queue = ctx.Queue()
        child = ctx.Process(target=_send_in_child, args=(sender, "child@example.com", queue))
        child.start()
        child.join(timeout=30)
        assert queue.get(timeout=5) == "SendResult"
        sender.send_many([outgoing("parent-again@example.com")])
    assert {m.rcpt_tos[0] for m in smtp_server.messages} == {
        "parent@example.com", "child@example.com", "parent-again@example.com"}


# -- accepted but not yet recorded -------------------------------------------------------------

async def _until(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_a_connection_sends_the_next_envelope_while_its_last_message_is_recorded_but_not_its_content(
        smtp_server):
    """One connection: while the first message's outcome is being recorded, the second message's
    MAIL, RCPT and DATA go out (the relay is not left idle), but its content waits until the first is
    recorded: never more messages accepted and unrecorded than the pool has connections."""
    async def scenario():
        pool = SmtpPool(SmtpConfig.from_url(smtp_server.url), size=1)
        recording, release, order = asyncio.Event(), asyncio.Event(), []

        async def slow_record(result: SendResult) -> None:
            recording.set()
            await release.wait()
            order.append(result.accepted)

        async def record(result: SendResult) -> None:
            order.append(result.accepted)

        first = asyncio.create_task(pool.send("bounce@acme.example", ["a@example.com"], mail("a@example.com"),
                                              slow_record))
        await recording.wait()
        second = asyncio.create_task(pool.send("bounce@acme.example", ["b@example.com"], mail("b@example.com"),
                                               record))
        await _until(lambda: smtp_server.envelopes_begun == 2)
        await asyncio.sleep(0.2)  # time enough for b's content, were it sent
        assert [m.rcpt_tos for m in smtp_server.messages] == [("a@example.com",)]
        release.set()
        await asyncio.gather(first, second)
        await pool.close()
        return order

    assert run(scenario()) == [("a@example.com",), ("b@example.com",)]
    assert [m.rcpt_tos for m in smtp_server.messages] == [("a@example.com",), ("b@example.com",)]
    assert smtp_server.connections == 1


def test_never_more_messages_accepted_and_unrecorded_than_the_pool_has_connections(smtp_server):
    async def scenario():
        pool = SmtpPool(SmtpConfig.from_url(smtp_server.url), size=3)
        recorded, most = 0, 0

        async def record(result: SendResult) -> None:
            nonlocal recorded, most
            most = max(most, len(smtp_server.messages) - recorded)  # accepted by the relay, not yet recorded
            await asyncio.sleep(0.002 * (len(result.accepted[0]) % 5))
            recorded += 1

        await asyncio.gather(*(pool.send("bounce@acme.example", [f"u{i}@example.com"], mail(f"u{i}@example.com"),
                                         record) for i in range(60)))
        await pool.close()
        return recorded, most

    recorded, most = run(scenario())
    assert recorded == len(smtp_server.messages) == 60
    assert 1 <= most <= 3


# -- the mail transaction ----------------------------------------------------------------------

def test_a_message_over_the_relays_size_limit_is_refused_at_mail_from_and_a_smaller_one_is_sent():
    small, big = mail("small@example.com"), mail("big@example.com", subject="x" * 3000)
    with SmtpTestServer(size_limit=2000) as server, \
            SmtpSender(SmtpConfig.from_url(server.url), retry_delays=()) as sender:
        outcomes = sender.send_many([OutgoingMail("b@acme.example", ["big@example.com"], big),
                                     OutgoingMail("b@acme.example", ["small@example.com"], small)])
    refused, sent = outcomes
    # The SIZE declared with MAIL FROM is the message's length, so the relay refuses before DATA.
    assert isinstance(refused, PermanentSmtpError) and refused.code == 552
    assert isinstance(sent, SendResult) and sent.accepted == ("small@example.com",)
    assert [m.data for m in server.messages] == [small]


def test_a_message_with_bare_line_feeds_arrives_with_crlf_line_ends(smtp_server):
    with SmtpSender(SmtpConfig.from_url(smtp_server.url), retry_delays=()) as sender:
        sender.send("b@acme.example", ["lf@example.com"], b"Subject: lf\n\nline one\nline two\n")
    (received,) = smtp_server.messages
    assert received.data == b"Subject: lf\r\n\r\nline one\r\nline two\r\n"


def test_every_recipient_refused_is_one_permanent_error_and_the_next_message_goes_through(smtp_server):
    smtp_server.script("gone@example.com", "550 5.1.1 no such user")
    smtp_server.script("left@example.com", "550 5.1.1 left the company")
    with SmtpSender(SmtpConfig.from_url(smtp_server.url), pool_size=1, retry_delays=()) as sender:
        first, second = sender.send_many([
            OutgoingMail("b@acme.example", ["gone@example.com", "left@example.com"], mail("x")),
            OutgoingMail("b@acme.example", ["here@example.com"], mail("here@example.com"))])
    assert isinstance(first, PermanentSmtpError) and first.code == 550
    assert isinstance(second, SendResult) and second.accepted == ("here@example.com",)
    assert [m.rcpt_tos for m in smtp_server.messages] == [("here@example.com",)]
    assert smtp_server.connections == 1  # the envelope was reset, the connection kept
