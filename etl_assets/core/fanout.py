"""Many requests to one source at once, as many as it lets us: an adaptive limit and a runner.

A big read (the first sync of a 100,000-issue site) is latency-bound when it asks one page
after another. :func:`run_fanned_out` sends the requests of a list of chunks from a small pool
of threads, gated by an :class:`AdaptiveLimit` that learns from the source's answers:

- a **429** halves the limit (multiplicative decrease, never below 1) and holds every new
  request until its ``Retry-After`` has passed (the one request that was refused is retried by
  the client itself, honouring the same header);
- a source that says it is close to its limit (``X-RateLimit-NearLimit: true``, or an
  ``X-RateLimit-Remaining`` lower than the requests in flight) stops the limit from growing and
  takes one off it;
- every other answer adds ``1 / limit`` (additive increase: one more request in flight per
  round trip of the whole window), up to ``maximum`` — recovery is slow on purpose, so a limit
  that was just hit is approached again gently.

A decrease happens at most once per round trip: the answers to requests that were already in
flight when the limit went down were sent under the old limit and say nothing new about the
new one (each still counts in the figures and still stops growth). Without that, one burst of
near-limit answers from a full window (12 in flight, all answered "near") would take the limit
from 12 to 1, where the source only asked for a little less.

Hand-written rather than a library: the limit must move on what each answer says (statuses and
headers seen by our own HTTP client), which the usual pool and retry libraries do not expose.
Threads, not asyncio: the source clients are synchronous (httpx), and the work per answer is
small next to the wait for it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar

from etl_assets.core.http import header, parse_retry_after, seconds_or_count

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class LimitStats:
    """What the limit went through, for the step's metadata."""

    peak: int = 0
    decreases: int = 0
    throttled: int = 0  # 429s seen
    near_limit: int = 0  # answers saying the source's limit is close
    held_s: float = 0.0  # time new requests were held for a Retry-After
    reasons: set[str] = field(default_factory=set)  # RateLimit-Reason values seen

    def metadata(self, prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            f"{prefix}_concurrency_peak": self.peak,
            f"{prefix}_concurrency_decreases": self.decreases,
            f"{prefix}_near_limit_answers": self.near_limit,
            f"{prefix}_held_for_retry_after_s": round(self.held_s, 3),
        }
        if self.reasons:
            out[f"{prefix}_rate_limit_reasons"] = ", ".join(sorted(self.reasons))
        return out


class AdaptiveLimit:
    """How many requests may be in flight now: AIMD on the source's answers (see the module)."""

    def __init__(
        self,
        maximum: int,
        *,
        initial: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if maximum < 1:
            raise ValueError("maximum concurrency must be 1 or more")
        self.maximum = maximum
        self._limit = float(min(initial or max(1, maximum // 2), maximum))
        self._in_flight = 0
        # Answers seen since the last decrease, and how many requests were in flight at it: a new
        # decrease waits until those have been answered (see the module).
        self._since_decrease = 0
        self._decrease_window = 0
        self._hold_until = 0.0
        self._clock = clock
        self._cond = threading.Condition()
        self.stats = LimitStats(peak=int(self._limit))

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def acquire(self, timeout: float | None = None) -> bool:
        """Take a place under the limit, past any Retry-After hold; False if none came within
        ``timeout`` seconds (None: wait as long as it takes)."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                now = self._clock()
                if now >= self._hold_until and self._in_flight < self.limit:
                    self._in_flight += 1
                    return True
                if deadline is not None and now >= deadline:
                    return False
                until = self._hold_until if now < self._hold_until else None
                if deadline is not None:
                    until = deadline if until is None else min(until, deadline)
                self._cond.wait(timeout=None if until is None else max(0.0, until - now))

    def release(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """One answer of the source (any attempt, retries included)."""
        with self._cond:
            self._since_decrease += 1
            reason = header(headers, "ratelimit-reason")
            if reason:
                self.stats.reasons.add(reason.strip()[:80])
            if status == 429:
                self.stats.throttled += 1
                self._decrease(self._limit / 2)
                retry_after = parse_retry_after(headers)
                if retry_after:
                    now = self._clock()
                    until = now + retry_after
                    self.stats.held_s += max(0.0, until - max(self._hold_until, now))
                    self._hold_until = max(self._hold_until, until)
            elif status < 400:
                near = (header(headers, "x-ratelimit-nearlimit") or "").strip().lower() == "true"
                remaining = seconds_or_count(header(headers, "x-ratelimit-remaining"))
                if near or (remaining is not None and remaining < self._in_flight):
                    self.stats.near_limit += 1
                    self._decrease(self._limit - 1)
                else:
                    self._limit = min(float(self.maximum), self._limit + 1 / max(self._limit, 1.0))
                    self.stats.peak = max(self.stats.peak, self.limit)
            self._cond.notify_all()

    def _decrease(self, to: float) -> None:
        if self._since_decrease <= self._decrease_window:
            return  # an answer to a request sent before the last decrease (see the module)
        new = max(1.0, to)
        if int(new) < self.limit:
            self.stats.decreases += 1
        self._limit = new
        # The answer being observed is one of the requests in flight; the others are still out.
        self._since_decrease, self._decrease_window = 0, max(0, self._in_flight - 1)


# CPython's young-generation threshold while a fan-out runs (its default is 700 container allocations).
FAN_OUT_GC_THRESHOLD = 50_000
_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Collect the young generation every :data:`FAN_OUT_GC_THRESHOLD` allocations instead of every
    700, while the block runs (process-wide; restored when the last such block ends).

    Each answer of a bulk fetch parses into ~50,000 containers that die with the answer and hold no
    cycles. At the default threshold CPython runs a young collection every 700 of them, and the
    trees that are alive at that moment (the answers being parsed, checked and landed by the other
    threads) are traversed and promoted, until full collections follow: measured on the benchmark,
    about a fifth of the fan-out's CPU. With the higher threshold nearly every tree is freed by its
    reference count before any collection sees it.
    """
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            if _gc_saved[0] < FAN_OUT_GC_THRESHOLD:
                gc.set_threshold(FAN_OUT_GC_THRESHOLD, *_gc_saved[1:])
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)
                _gc_saved = None


def run_fanned_out(
    items: Iterable[T],
    work: Callable[[T], R],
    limit: AdaptiveLimit,
    *,
    then: Callable[[T, R], R] | None = None,
) -> Iterator[tuple[T, R]]:
    """``work(item)`` for every item, at most ``limit`` at once, yielding ``(item, result)`` as each
    completes (completion order). The first failure stops new work, waits for what is in flight,
    and is raised; a consumer that stops iterating early does the same (nothing keeps running).

    ``then(item, result)``, when given, runs on the same worker once ``work`` has given its place
    under the limit back (e.g. storing an answer: the next request need not wait for it), and its
    result is the one yielded. An item counts against ``limit.maximum`` until ``then`` is done, so
    no more than that many items are ever fetched and not yet finished.
    """

    def guarded(item: T) -> R:
        try:
            result = work(item)
        finally:
            limit.release()
        return result if then is None else then(item, result)

    pending: dict[Future[R], T] = {}
    source = iter(items)
    exhausted = False
    with ThreadPoolExecutor(max_workers=limit.maximum, thread_name_prefix="fan-out") as pool:
        try:
            while True:
                while not exhausted and len(pending) < limit.maximum:
                    # With work in flight, never block here: finished work must be handed on.
                    if not limit.acquire(timeout=0 if pending else 0.05):
                        break
                    try:
                        item = next(source)
                    except StopIteration:
                        limit.release()
                        exhausted = True
                        break
                    pending[pool.submit(guarded, item)] = item
                if not pending:
                    if exhausted:
                        return
                    continue  # held by a Retry-After: try again
                done, _ = wait(list(pending), timeout=0.05, return_when=FIRST_COMPLETED)
                for future in done:
                    finished = pending.pop(future)
                    yield finished, future.result()
        finally:
            for future in pending:
                future.cancel()
