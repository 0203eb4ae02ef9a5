"""SEND_RATE: the most emails per second sent by all workers together, one budget kept in Redis.

Every thread of every worker process on every machine calls ``acquire(n)`` before putting ``n``
messages on the wire; ``acquire`` blocks until they are allowed. ``SEND_RATE=0`` means no limit
(:class:`NoLimit`). With ``BROKER_URL=memory://`` (one process: ``run``, ``demo``) the budget is kept
in the process (:class:`LocalSendRate`), with the same semantics and no Redis.

The bound
---------
For a rate ``r`` the burst capacity is ``b = max(1, r // 10)`` and no sliding second sees more than
``r + b`` grants (55 for a rate of 50), while a saturated limiter grants ``r`` per second on average.
Two rules, both checked atomically in one Lua script against Redis's own clock (``TIME``), so the
clocks of the machines running workers do not matter:

* GCRA (a token bucket of ``b`` tokens refilled at ``r``/s, kept as one "theoretical arrival time"):
  it spaces grants ``1/r`` apart, lets at most ``b`` through at once, and makes the long-run average
  ``r``. A request of ``n <= b`` needs ``n`` tokens; a request of ``n > b`` needs the bucket full and
  is then granted **whole, as a debt**: the arrival time moves ``n/r`` ahead and the next callers wait
  it out. (Granting it "in parts" would not help the relay: the caller sends the ``n`` messages
  together once ``acquire`` returns, so parts taken earlier would be sent late, bunched with the rest.)
* A sliding-window log (a sorted set of the grants of the last second plus a 50 ms margin): a grant
  of ``n`` is made only if the window's total plus ``n`` stays ``<= r + b``, or if the window is empty.
  GCRA alone keeps every second under ``r + b`` for ``n <= b``; the log is what keeps a debt grant of
  ``b < n <= r + b`` from landing in a second already full, and the 50 ms margin absorbs the jitter
  between the grant and the send (thread wake-up, the reply's trip), so the relay's seconds stay
  within the bound too. A single ``acquire(n)`` with ``n > r + b`` is granted alone in its window, but
  those ``n`` messages go out together and that second necessarily exceeds the bound: keep rounds
  small (``SendRate.burst`` messages or fewer send as smoothly as single messages; larger rounds
  cost throughput, e.g. rounds of 20 at a rate of 50 average about 40/s).

Waiting and fairness: the script *reserves*: it computes the earliest slot at which the request
conforms to both rules, given every reservation made before it, records the grant at that slot
and returns how long to wait until then; the client sleeps that long and sends. Slots are handed
out in order of arrival (a slot is never earlier than the one before it), so callers are served
first come, first served and a large request is not starved by a stream of small ones; one round
trip per acquire. (A first version answered "wait this long, then ask again"; measured with 8
threads it was unfair: the thread just served asked again first and kept winning, another got
fewer than 3 grants in 4 s.) A caller that dies while it waits leaves its slot unused: the relay then gets
fewer messages, never more. Keys (``<key>`` hash, ``<key>:log`` sorted set) expire about a second
after the last reservation is due; when they are gone the bucket is simply full again.

If Redis is unreachable, ``acquire`` raises :class:`SendRateUnavailable` (naming BROKER_URL and Redis)
rather than sending without a limit.

Why not ``dramatiq.rate_limits``
--------------------------------
Dramatiq ships a Redis backend with ``WindowRateLimiter`` and ``BucketRateLimiter``. Neither meets the
"no more than 55 in any second" bound: both count in fixed windows keyed on whole seconds (or whole
buckets) of the *client's* ``time.time()``, so ``r`` grants at the end of one window and ``r`` at the
start of the next put ``2r`` into one sliding second, and machines whose clocks disagree count in
different windows. Neither waits: a refused ``acquire`` raises ``RateLimitExceeded`` (or yields
False) without saying for how long, so callers would poll blindly; and their WATCH/MULTI retry loops
degrade under the contention of dozens of threads. Hence the Lua script below.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

DEFAULT_KEY = "campaign-dispatch:send-rate"
WINDOW_MARGIN_US = 50_000  # the sliding window is 1 s plus this (jitter between a grant and its send)


class SendRateUnavailable(RuntimeError):
    """The shared send-rate budget cannot be consulted (Redis unreachable or failing): nothing may be sent."""


class Limiter(Protocol):
    def acquire(self, n: int) -> None: ...


class NoLimit:
    """``SEND_RATE=0``: every ``acquire`` is granted at once."""

    rate = 0

    def acquire(self, n: int = 1) -> None:
        """Returns immediately."""
        _count(n)


@dataclass(frozen=True)
class _Params:
    rate: int
    interval_us: float  # GCRA emission interval: one grant per this many microseconds
    burst: int  # bucket capacity (tokens)
    per_window: int  # most grants in any sliding window
    window_us: int  # that window

    @classmethod
    def of(cls, rate: int) -> _Params:
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
            raise ValueError(f"a send rate is an int >= 1 (messages per second), not {rate!r}")
        burst = max(1, rate // 10)
        return cls(rate, 1_000_000 / rate, burst, rate + burst, 1_000_000 + WINDOW_MARGIN_US)


def _count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"acquire(n) takes an int >= 0, not {n!r}")
    return n


class _Blocking:
    """The client side shared by both limiters: reserve a slot, sleep until it."""

    params: _Params

    @property
    def rate(self) -> int:
        return self.params.rate

    @property
    def burst(self) -> int:
        """Messages that may go out at once (rounds up to this size flow as smoothly as single sends)."""
        return self.params.burst

    @property
    def per_second_max(self) -> int:
        """The most grants any sliding second sees (rate + burst)."""
        return self.params.per_window

    def acquire(self, n: int = 1) -> None:
        """Block the calling thread until ``n`` sends are allowed (see the module docstring for n > burst)."""
        if _count(n) == 0:
            return
        wait_us = self._reserve(n)
        if wait_us > 0:
            time.sleep(wait_us / 1_000_000)

    def _reserve(self, n: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


# KEYS[1]: hash {tat, total, last, seq}; KEYS[2]: sorted set of grants "<seq>:<n>" scored by their slot.
# ARGV: interval_us, burst, per_window, window_us, n. Reserves the earliest slot (not before the last
# one) at which n conform to the GCRA and to the sliding window, records it, and returns the
# microseconds from now until it. Times are integer microseconds of Redis's clock; numbers are written
# with %.0f (Lua's tostring keeps only 14 digits).
_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end  -- writes after TIME (Redis < 5)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local per_window = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local function num(x) return string.format('%.0f', x) end
local function count(member) return tonumber(string.match(member, ':(%d+)$')) end

local st = redis.call('HMGET', KEYS[1], 'tat', 'total', 'last', 'seq')
local tat = tonumber(st[1]) or now
local total = tonumber(st[2]) or 0
local last = tonumber(st[3]) or 0
local seq = tonumber(st[4]) or 0

-- grants that left the window
local cutoff = num(now - window)
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
for _, m in ipairs(gone) do total = total - count(m) end
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff) end
if total <= 0 or redis.call('ZCARD', KEYS[2]) == 0 then total = 0 end

-- GCRA: min(n, burst) tokens available (n > burst: the bucket full, the rest taken as a debt);
-- never before the last reservation, so slots are granted in order of arrival
local slot = math.max(now, last, tat - (burst - math.min(n, burst)) * interval)
-- sliding window: room for n, or the window empty (the oldest grants leave it at score + window)
if total > 0 and total + n > per_window then
  local left = total
  local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    if left <= 0 or left + n <= per_window then break end
    slot = math.max(slot, tonumber(entries[i + 1]) + window)
    left = left - count(entries[i])
  end
end

slot = math.ceil(slot)
tat = math.ceil(math.max(tat, slot) + n * interval)
seq = seq + 1
redis.call('ZADD', KEYS[2], num(slot), num(seq) .. ':' .. num(n))
redis.call('HSET', KEYS[1], 'tat', num(tat), 'total', num(total + n), 'last', num(slot), 'seq', num(seq))
local ttl = num(math.ceil((math.max(tat, slot + window) - now) / 1000) + 1000)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return slot - now
"""


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class SendRate(_Blocking):
    """The shared SEND_RATE budget in Redis: at most ``rate`` sends per second over all workers.

    Built from a Redis URL (the BROKER_URL), a rate (messages per second, int >= 1) and a key name.
    ``acquire(n)`` blocks the calling thread until ``n`` sends are allowed: a Lua script (EVALSHA),
    run atomically on Redis's clock, reserves the earliest slot allowed by a GCRA with a burst of
    ``max(1, rate // 10)`` and by a sliding-second log, in order of arrival, and answers how long to
    wait; the thread sleeps that long. ``n`` larger than the burst is granted whole when the bucket
    is full, as a debt that makes the next callers wait (details and the resulting bound in the
    module docstring). Thread-safe (redis-py's connection pool), fork-safe, shared by any number of
    processes and machines. Raises SendRateUnavailable when Redis cannot be reached.
    """

    def __init__(self, redis_url: str, rate: int, key: str = DEFAULT_KEY) -> None:
        self.params = _Params.of(rate)
        self.key, self.log_key = key, f"{key}:log"
        self._url = _redacted(redis_url)
        self._client = redis.Redis.from_url(
            redis_url, socket_connect_timeout=5, socket_timeout=5,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=3))
        self._script = self._client.register_script(_SCRIPT)
        p = self.params
        self._args = [repr(p.interval_us), p.burst, p.per_window, p.window_us]

    def __repr__(self) -> str:
        return f"SendRate({self._url!r}, rate={self.rate}, key={self.key!r})"

    def check(self) -> None:
        """Raise SendRateUnavailable unless Redis answers (for a check at start-up)."""
        self._call(self._client.ping)

    def _reserve(self, n: int) -> float:
        return int(self._call(lambda: self._script(keys=[self.key, self.log_key], args=[*self._args, n])))

    def _call(self, fn):
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise SendRateUnavailable(
                f"SEND_RATE is kept in Redis (BROKER_URL {self._url}), which is unreachable ({exc}); "
                "nothing is sent until it answers.") from exc
        except redis.RedisError as exc:
            raise SendRateUnavailable(
                f"SEND_RATE is kept in Redis (BROKER_URL {self._url}), which failed the limiter "
                f"script: {exc}") from exc


class LocalSendRate(_Blocking):
    """SEND_RATE within one process (``BROKER_URL=memory://``): the same rules as SendRate, no Redis.

    The state is kept under a lock and read on ``time.monotonic``; thread-safe.
    """

    def __init__(self, rate: int) -> None:
        self.params = _Params.of(rate)
        self._lock = threading.Lock()
        self._tat: float | None = None
        self._last = 0.0
        self._log: deque[tuple[float, int]] = deque()  # (slot, n), slots ascending
        self._total = 0

    def __repr__(self) -> str:
        return f"LocalSendRate(rate={self.rate})"

    def _reserve(self, n: int) -> float:
        p = self.params
        with self._lock:
            now = time.monotonic() * 1_000_000
            tat = now if self._tat is None else self._tat
            while self._log and self._log[0][0] <= now - p.window_us:
                self._total -= self._log.popleft()[1]
            slot = max(now, self._last, tat - (p.burst - min(n, p.burst)) * p.interval_us)
            left = self._total
            for when, count in self._log:
                if left <= 0 or left + n <= p.per_window:
                    break
                slot = max(slot, when + p.window_us)
                left -= count
            self._tat = max(tat, slot) + n * p.interval_us
            self._last = slot
            self._log.append((slot, n))
            self._total += n
            return slot - now


def send_rate(redis_url: str | None, rate: int) -> NoLimit | SendRate | LocalSendRate:
    """The limiter for SEND_RATE ``rate``: NoLimit for 0; in the process for ``memory://`` (or no
    URL); else shared through the Redis at ``redis_url`` (the BROKER_URL)."""
    if isinstance(rate, bool) or not isinstance(rate, int) or rate < 0:
        raise ValueError(f"SEND_RATE must be an int >= 0 (0: no limit), not {rate!r}")
    if rate == 0:
        return NoLimit()
    if redis_url is None or redis_url == "memory://":
        return LocalSendRate(rate)
    return SendRate(redis_url, rate)
