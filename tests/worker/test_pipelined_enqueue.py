"""Delivery batches are enqueued through a Redis pipeline, a few round trips for thousands of messages,
and the messages are those ``send_with_options`` makes: same queue, options and delay, the middleware's
enqueue hooks run for each, a real Dramatiq worker runs each once. The StubBroker sends one by one.

Against the real Redis, db 10 (flushed before and after each test; no other db is touched). Round
trips are counted on the client's own connections (``CountingConnection``): the server's counters
(INFO commandstats) are shared with whoever else uses this Redis.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Iterator

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis
from dramatiq.middleware import Middleware

from storage.ledger import Batch
from worker.pipeline.actors import DELIVERY_QUEUE, Actors, declare_actors
from worker.runtime.broker import NAMESPACE, make_broker
from worker.runtime.pipelined_enqueue import CHUNK, pipelines, send_many

REDIS_URL = "redis://127.0.0.1:6379/10"
QUEUE_KEY = f"{NAMESPACE}:{DELIVERY_QUEUE}"
DELAYED_KEY = f"{NAMESPACE}:{DELIVERY_QUEUE}.DQ"


class CountingConnection(redis.Connection):
    """A real connection that counts what it writes to Redis: one write per round trip (one command,
    or a whole pipeline)."""

    writes = 0

    def send_packed_command(self, command, check_health=True):
        type(self).writes += 1
        return super().send_packed_command(command, check_health)


class Recorder(Middleware):
    """Records each enqueue hook: (hook, message id, delay, whether the message was in Redis by then)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.calls: list[tuple[str, str, int | None, bool]] = []

    def _record(self, hook: str, message: dramatiq.Message, delay: int | None) -> None:
        key = f"{NAMESPACE}:{message.queue_name}.msgs"
        stored = bool(self.client.hexists(key, message.options["redis_message_id"]))
        self.calls.append((hook, message.message_id, delay, stored))

    def before_enqueue(self, broker, message, delay) -> None:
        self._record("before", message, delay)

    def after_enqueue(self, broker, message, delay) -> None:
        self._record("after", message, delay)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    """A client of db 10, flushed before and after the test."""
    rds = redis.Redis.from_url(REDIS_URL)
    rds.flushdb()
    yield rds
    rds.flushdb()
    rds.close()


@pytest.fixture
def broker(client) -> Iterator[RedisBroker]:
    """A RedisBroker as make_broker builds it, whose connections count their round trips."""
    pool = redis.ConnectionPool.from_url(REDIS_URL, connection_class=CountingConnection)
    rb = RedisBroker(client=redis.Redis(connection_pool=pool), namespace=NAMESPACE)
    yield rb
    rb.close()


@pytest.fixture
def actors(broker) -> Actors:
    return declare_actors(broker, app=None)  # the app is only used when a message runs


def batches(n: int, campaign_id: str = "c1", size: int = 200) -> list[Batch]:
    return [Batch(campaign_id, 1 + i * size, (i + 1) * size) for i in range(n)]


def stored(client: redis.Redis, queue_key: str) -> list[dramatiq.Message]:
    """The messages on a queue, in queue order."""
    ids = client.lrange(queue_key, 0, -1)
    return [dramatiq.Message.decode(data) for data in client.hmget(f"{queue_key}.msgs", ids)] if ids else []


def round_trips(fn) -> int:
    """Round trips ``fn`` makes, on a connection that is already open."""
    CountingConnection.writes = 0
    fn()
    return CountingConnection.writes


def test_enqueue_batches_puts_every_batch_on_the_queue_in_order_in_a_few_round_trips(actors, broker, client):
    todo = batches(2500)
    broker.client.ping()  # open the connection (its handshake is a few round trips of its own)
    trips = round_trips(lambda: actors.enqueue_batches(todo))

    messages = stored(client, QUEUE_KEY)
    assert [tuple(m.args) for m in messages] == [(b.campaign_id, b.first_id, b.last_id) for b in todo]
    assert {(m.actor_name, m.queue_name) for m in messages} == {("deliver_batch", DELIVERY_QUEUE)}
    assert len({m.message_id for m in messages}) == len({m.options["redis_message_id"] for m in messages}) == 2500
    assert client.llen(DELAYED_KEY) == 0
    # Each chunk is one pipeline and the script check redis-py makes before it (SCRIPT EXISTS); one
    # more for Dramatiq's own first call (its Lua stack probe). One by one, this was 2,500.
    assert trips <= 2 * math.ceil(len(todo) / CHUNK) + 1


def test_the_messages_are_those_send_with_options_makes(actors, broker, client):
    """Same fields and options (ids and timestamps aside), same keys in Redis, delayed or not."""
    def shape(message: dramatiq.Message) -> dict:
        fields = {k: v for k, v in message.asdict().items() if k not in ("message_id", "message_timestamp")}
        options = dict(fields.pop("options"))
        assert len(options.pop("redis_message_id")) == 36  # a uuid4 of its own: the values are per message
        if "eta" in options:
            assert isinstance(options.pop("eta"), int)  # its value: test_a_delay_puts_them_on_the_delay_queue
        return fields | {"options": options}

    def keys() -> dict[bytes, bytes]:
        return {key: client.type(key) for key in client.keys("*")}

    seen = []
    for delay in (None, 60_000):
        key = DELAYED_KEY if delay else QUEUE_KEY
        for batch in batches(3):
            actors.deliver_batch.send_with_options(args=(batch.campaign_id, batch.first_id, batch.last_id),
                                                   delay=delay)
        one_by_one, one_by_one_keys = [shape(m) for m in stored(client, key)], keys()
        client.flushdb()
        actors.enqueue_batches(batches(3), delay)
        pipelined, pipelined_keys = [shape(m) for m in stored(client, key)], keys()
        client.flushdb()
        assert pipelined == one_by_one and len(pipelined) == 3
        assert pipelined_keys == one_by_one_keys
        seen.append(pipelined_keys)
    assert seen[0] != seen[1]  # the delayed ones went elsewhere


def test_a_delay_puts_them_on_the_delay_queue_with_their_eta(actors, client):
    todo = batches(1500)
    before = current_millis()
    actors.enqueue_batches(todo, delay_ms=30_000)
    after = current_millis()

    messages = stored(client, DELAYED_KEY)
    assert client.llen(QUEUE_KEY) == 0
    assert [tuple(m.args) for m in messages] == [(b.campaign_id, b.first_id, b.last_id) for b in todo]
    assert {m.queue_name for m in messages} == {f"{DELIVERY_QUEUE}.DQ"}
    assert all(before + 30_000 <= m.options["eta"] <= after + 30_000 for m in messages)


@pytest.mark.parametrize("delay", [None, 5_000])
def test_the_enqueue_hooks_run_once_per_message(actors, broker, client, delay):
    recorder = Recorder(client)
    broker.add_middleware(recorder)
    actors.enqueue_batches(batches(2100), delay)

    ids = [m.message_id for m in stored(client, DELAYED_KEY if delay else QUEUE_KEY)]
    for hook, in_redis in (("before", False), ("after", True)):
        calls = [c for c in recorder.calls if c[0] == hook]
        assert [c[1] for c in calls] == ids  # once each, in order
        assert {(c[2], c[3]) for c in calls} == {(delay, in_redis)}


def _counting_actor(broker: dramatiq.Broker) -> tuple[dramatiq.Actor, Counter, threading.Event, int]:
    """An actor of the test's own counting its runs per first id; the event is set after ``expected`` runs."""
    runs: Counter = Counter()
    lock, done = threading.Lock(), threading.Event()
    expected = 2500

    def deliver(campaign_id: str, first_id: int, last_id: int) -> None:
        with lock:
            runs[first_id] += 1
            if sum(runs.values()) >= expected:
                done.set()

    actor = dramatiq.actor(deliver, broker=broker, queue_name=DELIVERY_QUEUE, actor_name="deliver_batch",
                           max_retries=0)
    return actor, runs, done, expected


def _run_worker(broker: dramatiq.Broker, done: threading.Event, seconds: float) -> None:
    """A Dramatiq worker on ``broker`` until ``done`` (``seconds`` at most: a limit, not a measure).
    Stopping it puts what it fetched and did not run back on the queue: a duplicate would be seen there."""
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        assert done.wait(seconds), "the worker did not run every message"
    finally:
        worker.stop()


@pytest.mark.parametrize("delay", [None, 300])
def test_a_dramatiq_worker_runs_each_pipelined_message_once(broker, client, delay):
    actor, runs, done, expected = _counting_actor(broker)
    todo = batches(expected)
    send_many(actor, [(b.campaign_id, b.first_id, b.last_id) for b in todo], delay=delay)
    _run_worker(broker, done, 120)

    assert runs == Counter({b.first_id: 1 for b in todo})
    assert client.llen(QUEUE_KEY) == client.llen(DELAYED_KEY) == 0
    assert client.hlen(f"{QUEUE_KEY}.msgs") == client.hlen(f"{DELAYED_KEY}.msgs") == 0  # each acked


def test_the_stub_broker_is_sent_one_message_at_a_time():
    stub = make_broker("memory://")
    assert isinstance(stub, StubBroker) and not pipelines(stub)
    actors = declare_actors(stub, app=None)
    todo = batches(30)
    actors.enqueue_batches(todo)
    actors.enqueue_batches(todo[:5], delay_ms=60_000)

    queued = [dramatiq.Message.decode(data) for data in list(stub.queues[DELIVERY_QUEUE].queue)]
    assert [tuple(m.args) for m in queued] == [(b.campaign_id, b.first_id, b.last_id) for b in todo]
    delayed = [dramatiq.Message.decode(data) for data in list(stub.queues[f"{DELIVERY_QUEUE}.DQ"].queue)]
    assert [tuple(m.args) for m in delayed] == [(b.campaign_id, b.first_id, b.last_id) for b in todo[:5]]
    stub.close()


def test_a_stub_broker_worker_runs_each_message_once():
    stub = StubBroker()
    actor, runs, done, expected = _counting_actor(stub)
    todo = batches(expected)
    send_many(actor, [(b.campaign_id, b.first_id, b.last_id) for b in todo])
    _run_worker(stub, done, 120)
    assert runs == Counter({b.first_id: 1 for b in todo})
    stub.close()


def test_a_redis_broker_with_an_enqueue_of_its_own_keeps_it(client):
    class Audited(RedisBroker):
        def enqueue(self, message, *, delay=None):
            self.audited = getattr(self, "audited", 0) + 1
            return super().enqueue(message, delay=delay)

    audited, plain = Audited(url=REDIS_URL, namespace=NAMESPACE), RedisBroker(url=REDIS_URL, namespace=NAMESPACE)
    assert not pipelines(audited) and pipelines(plain)
    declare_actors(audited, app=None).enqueue_batches(batches(10))
    assert audited.audited == 10 and client.llen(QUEUE_KEY) == 10
    audited.close(), plain.close()
