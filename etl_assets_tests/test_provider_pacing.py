"""Pacing that fills the limit however it is enforced (issue 11, part 2).

The paced budget's send times are checked against both limiters the fake server offers (a
60 s sliding window and a per-second token bucket with 2 s of burst), on a clock we move by
hand; the AIMD reaction to 429s and headers is checked directly; and one short run of the
real client against the token-bucket fake shows it is not refused. Throughput figures come
from benchmarks/bench_vectorize.py --pacing-only, not from timed tests.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from etl_assets.core.embeddings.openai_provider import open_openai_embedder
from etl_assets.core.embeddings.ratelimit import (
    FIRST_REQUEST_TOKENS,
    PACE_DECREASE,
    PACE_INCREASE,
    TPM_REQUEST_SHARE,
    RateLimiter,
    RateLimitInfo,
)
from etl_assets.core.embeddings.tokens import cl100k
from etl_assets.fakes.openai_server import FakeEmbeddings, _ApiError, _SlidingWindow, _TokenBuckets, fake_vector

TPM = 60_000
DIMS = 8


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def paced(clock: Clock, **kwargs: object) -> RateLimiter:
    budget = RateLimiter(tpm=TPM, pacing=True, clock=clock, **kwargs)  # type: ignore[arg-type]
    budget.observe(RateLimitInfo())  # as after the first answer
    return budget


def send_times(budget: RateLimiter, clock: Clock, sizes: list[int]) -> list[float]:
    """When each request would be sent, reserved all at once (a backlog) by concurrent senders."""
    return [clock.t + budget.reserve(n)[1] for n in sizes]


@pytest.mark.parametrize("limiter", ["window", "bucket"])
def test_paced_send_times_are_accepted_by_both_limiters_and_fill_the_limit(limiter):
    clock = Clock()
    budget = paced(clock)
    cap = budget.request_token_cap()
    assert cap == TPM // TPM_REQUEST_SHARE
    sizes = [cap] * 400  # about three minutes of work at the limit
    times = send_times(budget, clock, sizes)
    server = _SlidingWindow(None, TPM) if limiter == "window" else _TokenBuckets(None, TPM, 2.0, clock.t)
    for at, n in zip(times, sizes, strict=True):
        try:
            server.admit(at, n, "m")
        except _ApiError as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"the {limiter} limiter refused a paced request at +{at - times[0]:.2f}s: {exc}")
    span = times[-1] - times[0]
    share = sum(sizes[1:]) / (TPM * span / 60)
    assert 0.9 <= share <= 1.0, share


def test_an_unpaced_window_budget_bursts_and_a_short_bucket_refuses_it():
    # The behaviour the issue reported, kept as the contrast: a window-only budget sends a
    # minute's worth at once, which a 2 s bucket refuses.
    clock = Clock()
    budget = RateLimiter(tpm=TPM, clock=clock)
    times = send_times(budget, clock, [TPM // 40] * 8)
    bucket = _TokenBuckets(None, TPM, 2.0, clock.t)
    refused = 0
    for at in times:
        try:
            bucket.admit(at, TPM // 40, "m")
        except _ApiError:
            refused += 1
    assert refused > 0


def test_429s_decrease_the_rate_multiplicatively_once_per_congestion_and_answers_restore_it():
    clock = Clock()
    budget = paced(clock)
    full = budget.paced_rates()[1]
    budget.throttled()
    budget.throttled()  # the same congestion: not twice
    assert budget.pace_factor == pytest.approx(PACE_DECREASE)
    clock.t += 1.5
    budget.throttled()
    assert budget.pace_factor == pytest.approx(PACE_DECREASE**2)
    assert budget.paced_rates()[1] == pytest.approx(full * PACE_DECREASE**2)
    for _ in range(100):
        budget.answered()
    assert budget.pace_factor == 1.0  # additive increase, up to the ceiling
    budget.pace_factor = 0.5
    budget.answered()
    assert budget.pace_factor == pytest.approx(0.5 + PACE_INCREASE)


def test_a_remaining_header_below_the_next_request_slows_the_pace():
    clock = Clock()
    budget = paced(clock)
    budget.reserve(400)
    budget.observe(RateLimitInfo(limit_tokens=TPM, remaining_tokens=10_000))
    assert budget.pace_factor == 1.0
    clock.t += 2
    budget.observe(RateLimitInfo(limit_tokens=TPM, remaining_tokens=100))
    assert budget.pace_factor < 1.0


def test_until_the_first_answer_one_small_request_goes_alone():
    budget = RateLimiter(pacing=True)
    assert budget.request_token_cap() == FIRST_REQUEST_TOKENS

    async def go() -> tuple[bool, bool]:
        await budget.acquire(10)
        second = asyncio.create_task(budget.acquire(10))
        await asyncio.sleep(0.1)
        waited = not second.done()
        budget.observe(RateLimitInfo(limit_tokens=TPM, remaining_tokens=TPM))
        await asyncio.wait_for(second, 1.0)
        return waited, second.done()

    assert asyncio.run(go()) == (True, True)
    assert budget.request_token_cap() == TPM // TPM_REQUEST_SHARE


def test_the_client_against_a_two_second_bucket_is_not_refused():
    tpm = 120_000  # 2,000 tokens/s, 4,000 of burst
    texts = [f"ticket {i}: " + "the export job fails when the queue is full " * 8 for i in range(120)]
    counts = [len(cl100k().encode(t)) for t in texts]
    with FakeEmbeddings(
        dimensions=DIMS, tpm=tpm, limiter="bucket", token_counter=lambda t: len(cl100k().encode(t))
    ) as fake:

        async def go():
            async with open_openai_embedder(
                api_key="sk-test", model="text-embedding-3-small", dimensions=DIMS, base_url=fake.url
            ) as e:
                # four senders, as the engine's four request slots, each with a quarter of the rows
                parts = await asyncio.gather(*(e.embed_counted(texts[i::4], counts[i::4]) for i in range(4)))
                return parts, e.stats.copy()

        parts, stats = asyncio.run(go())
        assert fake.rate_limited <= 1, f"{fake.rate_limited} of {fake.requests} requests answered 429"
        assert stats.rate_limited == fake.rate_limited
    for i, part in enumerate(parts):
        assert np.array_equal(part, np.asarray([fake_vector(t, DIMS) for t in texts[i::4]], dtype="<f4"))
    assert sum(counts) > 2 * tpm / 60  # the run lasted more than the bucket's burst


def test_the_paced_bucket_holds_no_more_than_the_server_says_remain():
    clock = Clock()
    budget = paced(clock)
    assert budget.reserve(10)[1] == 0
    clock.t += 5  # the paced bucket is full again (burst of one second)
    budget.observe(RateLimitInfo(remaining_tokens=0))
    rate = budget.paced_rates()[1]
    assert rate is not None and budget.pace_factor < 1.0  # and an empty server is a warning
    # Without the header the bucket would send at once; with it, 500 tokens must first refill.
    assert budget.reserve(500)[1] == pytest.approx(500 / rate)
