"""SEND_RATE against a real Redis (db 13): no sliding second above rate + burst, the rate kept on
average, across threads and processes; no limit at 0; the in-process limiter; Redis unreachable."""

from __future__ import annotations

import multiprocessing
import os
import random
import socket
import threading
import time
import uuid

import pytest
import redis

from worker.channels.rate import LocalSendRate, NoLimit, SendRate, SendRateUnavailable, send_rate

REDIS_URL = os.environ.get("TEST_RATE_REDIS_URL", "redis://127.0.0.1:6379/13")
RATE, BOUND = 50, 55  # 55 = rate + burst (rate // 10)


@pytest.fixture
def key() -> str:
    """A fresh key in db 13, deleted afterwards (the db is not flushed: a benchmark may be using it)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    name = f"test-send-rate:{uuid.uuid4().hex}"
    yield name
    client.delete(name, f"{name}:log")
    client.close()


def max_in_window(times: list[float], *, start: float | None = None, end: float | None = None,
                  step: float | None = None, width: float = 1.0) -> int:
    """The most grants in a [t, t + width) window: at every `step` from `start` to `end`, or (step None)
    starting at every grant, which is the exact maximum over all windows."""
    times = sorted(times)
    starts = times if step is None else [start + i * step for i in range(int((end - start) / step) + 1)]
    best, lo, hi = 0, 0, 0
    for s in starts:
        while lo < len(times) and times[lo] < s:
            lo += 1
        hi = max(hi, lo)
        while hi < len(times) and times[hi] < s + width:
            hi += 1
        best = max(best, hi - lo)
    return best


def _grab(limiter, start: float, stop: float, sizes: tuple[int, int], seed: int, out: list) -> None:
    rng = random.Random(seed)
    time.sleep(max(0.0, start - time.time()))
    while time.time() < stop:
        n = rng.randint(*sizes)
        limiter.acquire(n)
        out.extend([time.time()] * n)


def _process(url: str, key: str, rate: int, threads: int, seconds: float, sizes: tuple[int, int],
             queue, go, start) -> None:
    limiter = SendRate(url, rate, key=key)
    queue.put("ready")
    go.wait(60)
    per_thread: list[list[float]] = [[] for _ in range(threads)]
    workers = [threading.Thread(target=_grab, args=(limiter, start.value, start.value + seconds, sizes,
                                                    os.getpid() * 100 + i, got))
               for i, got in enumerate(per_thread)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    queue.put(per_thread)


def run_processes(key: str, *, processes: int, threads: int, seconds: float,
                  sizes: tuple[int, int] = (1, 1)) -> tuple[float, float, list[list[float]]]:
    """Each grant's time (one entry per message) per thread, from `processes` spawned processes that
    start together once all are ready."""
    ctx = multiprocessing.get_context("spawn")
    queue, go, start = ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    procs = [ctx.Process(target=_process, args=(REDIS_URL, key, RATE, threads, seconds, sizes, queue, go, start))
             for _ in range(processes)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            assert queue.get(timeout=60) == "ready"
        start.value = time.time() + 0.2
        go.set()
        results = [queue.get(timeout=seconds + 30) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    assert all(p.exitcode == 0 for p in procs)
    return start.value, start.value + seconds, [thread for result in results for thread in result]


def test_threads_and_processes_share_one_budget(key):
    start, stop, per_thread = run_processes(key, processes=2, threads=4, seconds=4.0)
    times = [t for thread in per_thread for t in thread]
    assert max_in_window(times, start=start - 0.5, end=stop, step=0.05) <= BOUND
    assert max_in_window(times) <= BOUND
    average = sum(start <= t < stop for t in times) / (stop - start)
    assert average >= 45, f"{average:.1f}/s"
    assert all(len(thread) >= 3 for thread in per_thread)  # every thread is served


def test_rounds_larger_than_the_burst_keep_the_bound(key):
    start, stop, per_thread = run_processes(key, processes=2, threads=4, seconds=4.0, sizes=(5, 20))
    times = [t for thread in per_thread for t in thread]
    assert max_in_window(times, start=start - 0.5, end=stop, step=0.05) <= BOUND
    assert max_in_window(times) <= BOUND
    average = sum(start <= t < stop for t in times) / (stop - start)
    assert average >= 30, f"{average:.1f}/s"  # rounds above the burst cost throughput, not the bound
    assert all(thread for thread in per_thread)  # no round starved


def test_rate_zero_never_blocks():
    limiter = send_rate("redis://127.0.0.1:1/13", 0)  # nothing listens there: never consulted
    assert isinstance(limiter, NoLimit)
    began = time.monotonic()
    for _ in range(10_000):
        limiter.acquire(1_000)
    assert time.monotonic() - began < 0.5
    assert isinstance(send_rate("memory://", 0), NoLimit)


def test_memory_limiter_bound_in_one_process():
    limiter = send_rate("memory://", RATE)
    assert isinstance(limiter, LocalSendRate) and limiter.burst == 5 and limiter.per_second_max == BOUND
    for sizes, floor in (((1, 1), 45), ((1, 12), 35)):
        start = time.time() + 0.05
        stop = start + 3.0
        per_thread: list[list[float]] = [[] for _ in range(8)]
        workers = [threading.Thread(target=_grab, args=(limiter, start, stop, sizes, i, got))
                   for i, got in enumerate(per_thread)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        times = [t for thread in per_thread for t in thread]
        assert max_in_window(times) <= BOUND, sizes
        average = sum(start <= t < stop for t in times) / (stop - start)
        assert average >= floor, (sizes, average)
        assert all(per_thread), sizes
        time.sleep(1.2)  # let the window empty before the next round of the loop


def test_redis_unreachable_raises():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    limiter = send_rate(f"redis://:secret@127.0.0.1:{port}/13", RATE)
    assert isinstance(limiter, SendRate)
    began = time.monotonic()
    with pytest.raises(SendRateUnavailable) as info:
        limiter.acquire(1)
    assert time.monotonic() - began < 10
    message = str(info.value)
    assert "Redis" in message and "BROKER_URL" in message and f":{port}" in message
    assert "secret" not in message
    with pytest.raises(SendRateUnavailable):
        limiter.check()


def test_keys_expire_when_idle_and_arguments_are_checked(key):
    client = redis.Redis.from_url(REDIS_URL)
    limiter = SendRate(REDIS_URL, RATE, key=key)
    limiter.check()
    limiter.acquire(0)  # nothing to send: no wait, no key
    assert client.exists(key) == 0
    limiter.acquire(3)
    assert 0 < client.pttl(key) <= 3_000 and 0 < client.pttl(f"{key}:log") <= 3_000
    with pytest.raises(ValueError):
        limiter.acquire(-1)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError):
            send_rate(REDIS_URL, bad)
    with pytest.raises(ValueError):
        SendRate(REDIS_URL, 0)
    assert isinstance(send_rate(None, 5), LocalSendRate)
    client.close()


def test_a_round_larger_than_the_rate_is_a_debt(key):
    """n above rate + burst goes out alone in its window; the next callers wait for it to be paid."""
    client = redis.Redis.from_url(REDIS_URL)
    limiter = SendRate(REDIS_URL, 10, key=key)  # burst 1, at most 11 a second
    began = time.monotonic()
    limiter.acquire(30)
    assert time.monotonic() - began < 0.5
    limiter.acquire(1)
    assert time.monotonic() - began >= 2.5  # 30 messages at 10/s
    client.close()
