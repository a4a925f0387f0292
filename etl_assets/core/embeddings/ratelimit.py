"""Rate limits of an embedding API: what the headers say, and a budget every request shares.

OpenAI (and compatible gateways) limit requests and tokens per minute. A 429 may carry
``retry-after-ms`` / ``retry-after``; any response may carry ``x-ratelimit-limit-*``,
``x-ratelimit-remaining-*`` and ``x-ratelimit-reset-*`` (Go-style durations such as
``6m0s`` or ``12ms``). Some servers send none of them, so a client-side budget can be
configured as well.

:class:`RateLimiter` is one budget for every request that uses the same key and model:

* Each request *reserves* its place before it is sent: the earliest moment at which the
  requests and tokens sent in the last 60 s, plus this one, stay within the limits. The
  limits are the configured ones (``EMBEDDING_RPM`` / ``EMBEDDING_TPM``) and those the
  server announces in ``x-ratelimit-limit-*``, whichever is lower. Reservations are handed
  out in arrival order, so a large request is not starved by small ones.
* When the server reports less remaining than our own log explains (another process uses
  the same key), the difference is booked as foreign usage, so we slow down accordingly.
* A 429 pauses every request of the budget until the server's retry time, instead of
  letting each of them find out with its own 429.

The log is a sliding 60 s window, the shape the per-minute limits have: a sender that
never exceeds the limit in any 60 s window is accepted by a sliding-window limiter. It is
not enough for a limit enforced over shorter periods (OpenAI documents that per-minute
limits may be; a token bucket refilled every second with a couple of seconds of burst): a
client that sends a minute's budget as fast as the window allows is refused most of the
time. So a *paced* budget (``pacing=True``, what the embedders use) also spreads requests
evenly, as a token bucket of its own (GCRA): rate ``limit / (60 + burst + slack)`` per
second, ``PACE_BURST_S`` of burst, for tokens and for requests. That rate satisfies a
sliding window (at most ``rate * (60 + burst)`` in any 60 s) and a per-second bucket with
at least ``PACE_BURST_S`` of burst plus one request. The rate adapts to what the server
says: each 429 multiplies it by ``PACE_DECREASE`` (once per ``PACE_DECREASE_EVERY_S``, a
burst of 429s is one congestion), each answer adds ``PACE_INCREASE`` of the ceiling back
(AIMD), and an answer whose ``x-ratelimit-remaining-tokens`` is below the request just
sent counts as a warning (a gentler decrease), and the paced bucket never holds more than
the server's remaining tokens. Requests are cut to ``1/TPM_REQUEST_SHARE``
of the TPM (half a second of the rate), so one request never empties a short bucket.
Concurrency follows from the pacing: requests leave one at a time at the paced rate, so
only about ``rate x latency / request size`` are in flight, however many slots the
engine allows. Written by hand because the libraries we looked at
(tenacity, aiolimiter) offer neither reservations that span tokens and requests at once
nor re-synchronisation from response headers. The state is guarded by a thread lock and
never awaits while holding it, so one budget can be shared by event loops in different
threads (each step of a Dagster run has its own loop).
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from etl_assets.core.http import header, parse_retry_after, seconds_or_count

WINDOW_S = 60.0
# Our log stamps a request when it may be sent; the server stamps it when it arrives. A
# little slack keeps us from sending just before the server's window has moved on.
DEFAULT_MARGIN_S = 0.5
# The server may stamp a request seconds after we did (a large body to send, parse and count
# on a busy server). Entries stay in our log this much longer than the window, and count
# when we compare our usage with the server's, so that lag is not mistaken for someone
# else's usage (which would hold back a minute's worth of requests).
SKEW_S = 5.0
# With a known TPM, requests are cut to at most 1/120 of it (half a second of the paced
# rate): a request goes only once all of it fits, so a short bucket (a couple of seconds of
# the rate) always has room for the next one, and a window loses at most 1/120 of itself.
TPM_REQUEST_SHARE = 120
PACE_BURST_S = 1.0  # the paced budget's own burst, in seconds of its rate
PACE_SLACK_S = 1.0  # rate = limit / (60 + burst + slack): room for timing jitter
PACE_DECREASE = 0.7  # a 429 multiplies the paced rate by this ...
PACE_WARN_DECREASE = 0.9  # ... a nearly exhausted remaining-tokens header by this ...
PACE_DECREASE_EVERY_S = 1.0  # ... at most once per this many seconds
PACE_INCREASE = 0.02  # each answer adds this share of the ceiling back
PACE_MIN_FACTOR = 0.05
# Until the first answer tells a paced budget the server's limits, one request of at most this
# many tokens goes alone (one full input): a first burst of full-size requests would be refused
# by a short bucket, or take a minute's budget at once from a window.
FIRST_REQUEST_TOKENS = 8192
FIRST_ANSWER_WAIT_S = 10.0  # others wait this long at most for the first answer

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|μs|ns)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}


def parse_duration(value: str | None) -> float | None:
    """Seconds in a Go-style duration (``6m0s``, ``1.5s``, ``12ms``) or a bare number of seconds."""
    if value is None:
        return None
    text = value.strip().lower()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


@dataclass(frozen=True)
class RateLimitInfo:
    """What one response says about the limits. Every field is optional."""

    limit_requests: float | None = None
    limit_tokens: float | None = None
    remaining_requests: float | None = None
    remaining_tokens: float | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None
    retry_after_s: float | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimitInfo:
        return cls(
            limit_requests=seconds_or_count(header(headers, "x-ratelimit-limit-requests")),
            limit_tokens=seconds_or_count(header(headers, "x-ratelimit-limit-tokens")),
            remaining_requests=seconds_or_count(header(headers, "x-ratelimit-remaining-requests")),
            remaining_tokens=seconds_or_count(header(headers, "x-ratelimit-remaining-tokens")),
            reset_requests_s=parse_duration(header(headers, "x-ratelimit-reset-requests")),
            reset_tokens_s=parse_duration(header(headers, "x-ratelimit-reset-tokens")),
            retry_after_s=parse_retry_after(headers),
        )

    @property
    def empty(self) -> bool:
        return all(v is None for v in vars(self).values())

    def exhausted_reset_s(self, tokens: int = 0) -> float | None:
        """Time until the exhausted limit resets, if the headers show one exhausted."""
        waits = []
        if self.remaining_requests is not None and self.remaining_requests < 1 and self.reset_requests_s is not None:
            waits.append(self.reset_requests_s)
        if (
            self.remaining_tokens is not None
            and self.reset_tokens_s is not None
            and self.remaining_tokens < max(1, tokens)
        ):
            waits.append(self.reset_tokens_s)
        return max(waits) if waits else None


def backoff_s(attempt: int, *, base_s: float = 0.5, cap_s: float = 30.0, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    # One line rather than tenacity: the wait is combined with header-driven waits and a
    # pause shared by all requests, which tenacity's per-call retry loop does not model.
    return (rng or random).uniform(0.0, min(cap_s, base_s * (2.0 ** max(0, attempt))))


def retry_delay_s(info: RateLimitInfo, attempt: int, *, tokens: int = 0, cap_s: float = 120.0) -> tuple[float, str]:
    """How long to wait after a 429, and which hint decided it."""
    if info.retry_after_s is not None:
        return min(cap_s, info.retry_after_s), "retry-after"
    reset = info.exhausted_reset_s(tokens)
    if reset is not None:
        return min(cap_s, reset), "x-ratelimit-reset"
    return backoff_s(attempt, cap_s=min(cap_s, 30.0)), "backoff"


class _Entry:
    __slots__ = ("at", "requests", "tokens")

    def __init__(self, at: float, requests: int, tokens: int) -> None:
        self.at, self.requests, self.tokens = at, requests, tokens


@dataclass(frozen=True)
class Reservation:
    entry: _Entry
    waited_s: float


class RateLimiter:
    """A shared requests/tokens-per-minute budget; see the module docstring."""

    def __init__(
        self,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        window_s: float = WINDOW_S,
        margin_s: float = DEFAULT_MARGIN_S,
        clock: Callable[[], float] = time.monotonic,
        pacing: bool = False,
        burst_s: float = PACE_BURST_S,
    ) -> None:
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.rpm, self.tpm = rpm, tpm
        self.learned_rpm: int | None = None
        self.learned_tpm: int | None = None
        self.window_s = window_s + margin_s
        self.clock = clock
        self.foreign_tokens = 0  # booked from headers: usage by other clients of the key
        self._log: collections.deque[_Entry] = collections.deque()
        self._pause_until = 0.0
        self._lock = threading.Lock()
        self.pacing, self.burst_s = pacing, burst_s
        self.pace_factor = 1.0  # share of the ceiling rate the pacing uses now (AIMD)
        self._tat_tokens = self._tat_requests = -math.inf  # GCRA: when the paced buckets are empty again
        self._last_decrease = -math.inf
        self._last_tokens = 0
        self.answered_once = False  # a response (any) came back: the server had its chance to announce limits
        self._first_sent_at: float | None = None

    # -- limits ------------------------------------------------------------------------

    @property
    def effective_rpm(self) -> int | None:
        return _min(self.rpm, self.learned_rpm)

    @property
    def effective_tpm(self) -> int | None:
        return _min(self.tpm, self.learned_tpm)

    def request_token_cap(self) -> int | None:
        """Largest request worth sending under the current TPM (None: no TPM known)."""
        tpm = self.effective_tpm
        if tpm is None:
            return FIRST_REQUEST_TOKENS if self.pacing and not self.answered_once else None
        return max(1, tpm // TPM_REQUEST_SHARE)

    def paced_rates(self) -> tuple[float | None, float | None]:
        """Requests and tokens per second the pacing allows now (None: no limit known, or no pacing)."""
        if not self.pacing:
            return None, None
        span = self.window_s + self.burst_s + PACE_SLACK_S
        rpm, tpm = self.effective_rpm, self.effective_tpm
        rate_r = None if rpm is None else rpm / span * self.pace_factor
        rate_t = None if tpm is None else tpm / span * self.pace_factor
        return rate_r, rate_t

    def _paced(self, at: float, tokens: int) -> float:
        rate_r, rate_t = self.paced_rates()
        if rate_r is not None:
            at = max(at, self._tat_requests - max(self.burst_s, 1.0 / rate_r))
        if rate_t is not None:  # the paced bucket must hold the whole request when it leaves
            at = max(at, self._tat_tokens + tokens / rate_t - self.burst_s)
        return at

    def _book_paced(self, at: float, tokens: int) -> None:
        rate_r, rate_t = self.paced_rates()
        if rate_r is not None:
            self._tat_requests = max(self._tat_requests, at) + 1.0 / rate_r
        if rate_t is not None:
            self._tat_tokens = max(self._tat_tokens, at) + tokens / rate_t
        self._last_tokens = tokens

    def throttled(self, factor: float = PACE_DECREASE) -> None:
        """The server refused a request (429): pace slower (once per congestion)."""
        with self._lock:
            self._decrease(factor)

    def _decrease(self, factor: float) -> None:
        now = self.clock()
        if now - self._last_decrease >= PACE_DECREASE_EVERY_S:
            self._last_decrease = now
            self.pace_factor = max(PACE_MIN_FACTOR, self.pace_factor * factor)

    def no_answer(self) -> None:
        """A request got no answer at all (timeout, connection failure): let the next one try."""
        with self._lock:
            self._first_sent_at = None

    def answered(self) -> None:
        """The server took a request: pace a little faster, up to the ceiling."""
        with self._lock:
            self.pace_factor = min(1.0, self.pace_factor + PACE_INCREASE)

    # -- reservations ------------------------------------------------------------------

    def reserve(self, tokens: int) -> tuple[_Entry, float]:
        """Book a place for a request of ``tokens``; returns it and the delay before sending."""
        with self._lock:
            now = self.clock()
            self._prune(now)
            rpm, tpm = self.effective_rpm, self.effective_tpm
            if tpm is not None and tokens > tpm:
                raise ValueError(f"a request of {tokens} tokens can never fit a budget of {tpm} tokens per minute")
            at = max(now, self._pause_until, self._log[-1].at if self._log else now)
            at = self._paced(at, tokens)
            if rpm is not None or tpm is not None:
                at = self._fit(at, tokens, rpm, tpm)
            self._book_paced(at, tokens)
            entry = _Entry(at, 1, tokens)
            self._log.append(entry)
            return entry, at - now

    def _fit(self, at: float, tokens: int, rpm: int | None, tpm: int | None) -> float:
        # Entries are in time order and none is later than ``at``. Walk the window forward
        # until this request fits: each step moves ``at`` to the moment the oldest entry in
        # the window expires.
        used_requests = sum(e.requests for e in self._log)
        used_tokens = sum(e.tokens for e in self._log)
        for oldest in self._log:
            if oldest.at > at - self.window_s:
                if (rpm is None or used_requests + 1 <= rpm) and (tpm is None or used_tokens + tokens <= tpm):
                    return at
                at = oldest.at + self.window_s  # from here on the oldest entry is out of the window
            used_requests -= oldest.requests
            used_tokens -= oldest.tokens
        return at

    async def acquire(self, tokens: int) -> Reservation:
        """Wait for this request's turn; the reservation counts from then on."""
        started = self.clock()
        while self.pacing and not self.answered_once:
            with self._lock:
                now = self.clock()
                first = self._first_sent_at is None or now - self._first_sent_at > FIRST_ANSWER_WAIT_S
                if first:
                    self._first_sent_at = now
            if first:
                break
            await asyncio.sleep(0.02)  # the first request is out: its answer may announce the limits
        while True:
            entry, delay = self.reserve(tokens)
            if delay > 0:
                try:
                    await asyncio.sleep(delay)
                except BaseException:
                    self.cancel(entry)
                    raise
            if self.pause_remaining() <= 0:
                return Reservation(entry, self.clock() - started)
            self.cancel(entry)  # a 429 paused the budget meanwhile: queue again behind the pause

    def cancel(self, entry: _Entry) -> None:
        """Give a reservation back (the request was refused and did not count)."""
        with self._lock:
            try:
                self._log.remove(entry)
            except ValueError:
                pass

    def pause_remaining(self) -> float:
        with self._lock:
            return max(0.0, self._pause_until - self.clock())

    def pause(self, seconds: float) -> None:
        """Hold every request of this budget for ``seconds`` (a 429 told us to)."""
        with self._lock:
            self._pause_until = max(self._pause_until, self.clock() + max(0.0, seconds))

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s - SKEW_S
        while self._log and self._log[0].at <= horizon:
            self._log.popleft()

    def used(self) -> tuple[int, int]:
        """Requests and tokens booked in the window ending now (sent, not due later)."""
        with self._lock:
            now = self.clock()
            self._prune(now)
            live = [e for e in self._log if now - self.window_s < e.at <= now]
            return sum(e.requests for e in live), sum(e.tokens for e in live)

    # -- what the server said ------------------------------------------------------------

    def observe(self, info: RateLimitInfo) -> None:
        """Learn the limits a response announces and book usage we cannot account for."""
        self.answered_once = True
        if info.empty:
            return
        with self._lock:
            now = self.clock()
            if info.limit_requests is not None and info.limit_requests >= 1:
                self.learned_rpm = int(info.limit_requests)
            if info.limit_tokens is not None and info.limit_tokens >= 1:
                self.learned_tpm = int(info.limit_tokens)
            self._prune(now)
            sent = [e for e in self._log if e.at <= now]  # including the last SKEW_S before the window
            if info.limit_requests is not None and info.remaining_requests is not None:
                server_used = info.limit_requests - info.remaining_requests
                extra = int(server_used - sum(e.requests for e in sent))
                if extra > 0:
                    self._book_foreign(now, info.reset_requests_s, requests=extra)
            if info.limit_tokens is not None and info.remaining_tokens is not None:
                server_used = info.limit_tokens - info.remaining_tokens
                extra = int(server_used - sum(e.tokens for e in sent))
                if extra > 0:
                    self._book_foreign(now, info.reset_tokens_s, tokens=extra)
            rate_t = self.paced_rates()[1]
            if rate_t and info.remaining_tokens is not None:
                # The server holds only this much now: the paced bucket may not hold more. (The
                # figure predates requests sent since, which the paced bucket already counts, so
                # this only ever slows us down when the server has less than we thought.)
                self._tat_tokens = max(self._tat_tokens, now + self.burst_s - info.remaining_tokens / rate_t)
            if (
                self.pacing
                and info.remaining_tokens is not None
                and info.retry_after_s is None
                and info.remaining_tokens < self._last_tokens
            ):
                self._decrease(PACE_WARN_DECREASE)  # the next request of this size would be refused
            if info.limit_requests is None and info.limit_tokens is None:
                # Remaining without a limit: we cannot keep a window, but an exhausted
                # counter tells us to wait for its reset.
                reset = info.exhausted_reset_s()
                if reset is not None:
                    self._pause_until = max(self._pause_until, now + reset)

    def _book_foreign(self, now: float, reset_s: float | None, *, requests: int = 0, tokens: int = 0) -> None:
        # Usage we did not send. It leaves the server's window by its reset time at the
        # latest, so it leaves ours then too (a window from now if no reset was given).
        lifetime = self.window_s if reset_s is None else min(self.window_s, reset_s)
        self.foreign_tokens += tokens
        self._insert(_Entry(now - self.window_s + lifetime, requests, tokens))

    def _insert(self, entry: _Entry) -> None:
        # Keep time order: reservations due later stay after this entry.
        later = []
        while self._log and self._log[-1].at > entry.at:
            later.append(self._log.pop())
        self._log.append(entry)
        self._log.extend(reversed(later))


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


_SHARED: weakref.WeakValueDictionary[tuple[object, ...], RateLimiter] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def shared_limiter(key: tuple[object, ...], *, rpm: int | None = None, tpm: int | None = None) -> RateLimiter:
    """The one budget of this process for ``key`` (e.g. endpoint, API key fingerprint, model).

    Embedders opened at the same time with the same key share it; once none holds it, the
    next one starts afresh (and learns the server's limits again from its first answer).
    """
    with _SHARED_LOCK:
        limiter = _SHARED.get((*key, rpm, tpm))
        if limiter is None:
            limiter = RateLimiter(rpm=rpm, tpm=tpm, pacing=True)
            _SHARED[(*key, rpm, tpm)] = limiter
        return limiter
