"""The offline MiniLM embedder under the engine's concurrency.

The engine keeps several requests in flight and splits rows in a worker thread, so the local
model is used from several threads at once. Its fast tokenizer keeps truncation and padding
settings between calls; unguarded, a token count in one thread could turn off the padding an
encode in another thread relied on ("expected sequence of length 256 ... (got 245)").
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading

import pytest

from etl_assets.core.embeddings.base import split_counted

WORDS = "login fails password unicode export timeout board sprint release crash sync".split()


@pytest.mark.slow
def test_encodes_and_splits_in_other_threads_do_not_interfere():
    from etl_assets.core.embeddings.local_provider import LOCAL_DIMENSIONS, LocalEmbedder

    embedder = LocalEmbedder()
    rng = random.Random(11)
    # Lengths on both sides of the model's 256-token limit, so encode truncates and pads.
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 400))) for _ in range(120)]
    alone = asyncio.run(embedder.embed(texts[:4]))
    stop = threading.Event()
    split_errors: list[BaseException] = []

    def splitter() -> None:  # what the engine's planning thread does while requests are out
        while not stop.is_set():
            for text in texts[:20]:
                try:
                    split_counted(embedder, text, 60)
                except Exception as exc:  # noqa: BLE001 - collected and asserted below
                    split_errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # switch threads often, so an unguarded race shows within seconds
    threads = [threading.Thread(target=splitter) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        batches = [rng.sample(texts, 4) for _ in range(60)] + [texts[:4]]

        async def go():
            return await asyncio.gather(*(embedder.embed(b) for b in batches))

        results = asyncio.run(go())
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(interval)
    assert split_errors == []
    assert all(len(got) == 4 and all(len(v) == LOCAL_DIMENSIONS for v in got) for got in results)
    # What was computed among the other threads is what one thread computes alone.
    assert (
        max(abs(a - b) for va, vb in zip(alone, results[-1], strict=True) for a, b in zip(va, vb, strict=True)) < 1e-4
    )
