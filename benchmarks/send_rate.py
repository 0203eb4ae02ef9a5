"""Benchmark: SEND_RATE shared by two worker supervisors (worker/channels/rate.py).

Starts two "supervisors" as separate processes; each starts N processes x 8 threads that call
``SendRate.acquire`` (one message each time, or a round of --batch messages) for T seconds against one
budget in Redis, and records the time of every grant. All processes start together once every one has
imported. Prints each second's count, the maximum over any sliding 1-second window (exact: a window
starting at every grant), the average, and the command that reproduces the run. Uses Redis db 13 at
127.0.0.1:6379 (or --redis) and a key of its own, deleted at the end; nothing else is touched.
Reproduce with:

    .venv/bin/python benchmarks/send_rate.py --rate 50 --seconds 10 --processes 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import shlex
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from worker.channels.rate import SendRate  # noqa: E402

SUPERVISORS = 2
DRAIN_SECONDS = 3.0  # after the run, how long a thread may still wait for the slot it reserved
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"


def _thread(limiter: SendRate, start: float, stop: float, batch: tuple[int, int], seed: int,
            out: list[float]) -> None:
    rng = random.Random(seed)
    time.sleep(max(0.0, start - time.time()))
    while time.time() < stop:
        n = rng.randint(*batch)
        limiter.acquire(n)
        out.extend([time.time()] * n)


def _worker(url: str, key: str, rate: int, threads: int, seconds: float, batch: tuple[int, int],
            name: str, queue, go, start) -> None:
    limiter = SendRate(url, rate, key=key)
    queue.put(("ready", name))
    if not go.wait(120):
        return
    begin, stop = start.value, start.value + seconds
    got: list[list[float]] = [[] for _ in range(threads)]
    pool = [threading.Thread(target=_thread, args=(limiter, begin, stop, batch, hash((name, i)), got[i]),
                             daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=max(0.0, stop + DRAIN_SECONDS - time.time()))
    queue.put((name, [list(g) for g in got]))  # a thread still waiting for its slot is left behind


def _supervisor(index: int, processes: int, url: str, key: str, rate: int, threads: int, seconds: float,
                batch: tuple[int, int], queue, go, start) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(url, key, rate, threads, seconds, batch,
                                               f"supervisor{index}/process{p}", queue, go, start))
             for p in range(processes)]
    for p in procs:
        p.start()
    go.wait(120)
    deadline = time.time() + seconds + DRAIN_SECONDS + 10
    for p in procs:
        p.join(timeout=max(1.0, deadline - time.time()))
        if p.is_alive():
            p.terminate()


def shown(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def max_window(times: list[float], width: float = 1.0) -> tuple[int, float]:
    """The most grants in any [t, t + width) window, and where it starts (windows at every grant)."""
    times = sorted(times)
    best, at, hi = 0, 0.0, 0
    for lo, t in enumerate(times):
        hi = max(hi, lo)
        while hi < len(times) and times[hi] < t + width:
            hi += 1
        if hi - lo > best:
            best, at = hi - lo, t
    return best, at


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=50, help="SEND_RATE, messages per second (default 50)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the threads acquire (default 10)")
    parser.add_argument("--processes", type=int, default=2, help="processes per supervisor (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads per process (default 8)")
    parser.add_argument("--batch", default="1", help="messages per acquire: N, or A-B drawn at random (default 1)")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help=f"Redis URL (default {DEFAULT_REDIS})")
    args = parser.parse_args()
    low, _, high = args.batch.partition("-")
    batch = (int(low), int(high or low))
    if (not 1 <= batch[0] <= batch[1]) or args.rate < 1 or not 0 < args.seconds <= 600 \
            or not 1 <= args.processes <= 32 or not 1 <= args.threads <= 64:
        parser.error("need --rate >= 1, 0 < --seconds <= 600, 1 <= --processes <= 32, 1 <= --threads <= 64, "
                     "--batch N or A-B with 1 <= A <= B")

    client = redis.Redis.from_url(args.redis)
    client.ping()
    key = f"bench-send-rate:{uuid.uuid4().hex}"
    probe = SendRate(args.redis, args.rate, key=key)
    ctx = multiprocessing.get_context("spawn")
    queue, go, shared_start = ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    sups = [ctx.Process(target=_supervisor, args=(i, args.processes, args.redis, key, args.rate,
                                                  args.threads, args.seconds, batch, queue, go, shared_start))
            for i in range(SUPERVISORS)]
    for sup in sups:
        sup.start()
    workers = SUPERVISORS * args.processes
    results: dict[str, list[list[float]]] = {}
    try:
        for _ in range(workers):
            kind, _name = queue.get(timeout=120)
            assert kind == "ready"
        start = shared_start.value = time.time() + 0.2
        stop = start + args.seconds
        go.set()
        for _ in range(workers):
            name, got = queue.get(timeout=max(1.0, stop + DRAIN_SECONDS + 20 - time.time()))
            results[name] = got
    finally:
        go.set()
        for sup in sups:
            sup.join(timeout=args.seconds + DRAIN_SECONDS + 15)
            if sup.is_alive():
                sup.terminate()
        client.delete(key, f"{key}:log")
        client.close()

    times = sorted(t for got in results.values() for thread in got for t in thread)
    in_run = [t for t in times if start <= t < stop]
    per_second = [0] * int(-(-args.seconds // 1))
    for t in in_run:
        per_second[int(t - start)] += 1
    best, best_at = max_window(times)
    bound = probe.per_second_max
    per_thread = sorted(len(thread) for got in results.values() for thread in got)

    print(f"SEND_RATE={args.rate}: {SUPERVISORS} supervisors x {args.processes} processes x {args.threads} "
          f"threads ({workers * args.threads} threads), {args.batch} message(s) per acquire, "
          f"{args.seconds:g} s, {shown(args.redis)}")
    print(f"burst {probe.burst}, bound {bound} in any second (rate + burst)")
    print("second  grants")
    for i, count in enumerate(per_second):
        print(f"{i:>6}  {count:>6}")
    late = len(times) - len(in_run)
    if late:
        print(f"  (+{late} granted after the run, to threads that had reserved a slot before it ended)")
    print(f"max in any sliding 1 s window: {best} (window starting {best_at - start:+.3f} s)  bound {bound}: "
          f"{'OK' if best <= bound else 'EXCEEDED'}")
    print(f"average: {len(in_run) / args.seconds:.1f}/s ({len(in_run)} grants in {args.seconds:g} s; "
          f"target >= {0.9 * args.rate:.0f}/s)")
    print(f"grants per thread: min {per_thread[0]}, median {per_thread[len(per_thread) // 2]}, "
          f"max {per_thread[-1]} ({len(results)}/{workers} processes reported)")
    command = [".venv/bin/python", "benchmarks/send_rate.py", "--rate", str(args.rate), "--seconds",
               f"{args.seconds:g}", "--processes", str(args.processes)]
    if args.threads != 8:
        command += ["--threads", str(args.threads)]
    if args.batch != "1":
        command += ["--batch", args.batch]
    if args.redis != DEFAULT_REDIS:
        command += ["--redis", shown(args.redis)]
    print("reproduce:", shlex.join(command))
    return 0 if best <= bound else 1


if __name__ == "__main__":
    sys.exit(main())
