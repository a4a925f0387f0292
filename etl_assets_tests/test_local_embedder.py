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


@pytest.mark.slow
def test_the_demo_runs_as_a_new_user_runs_it(tmp_path):
    """``etl-assets demo`` as the README gives it: bundled tenants, local model, embedded stores.

    The environment is the user's, minus anything that points elsewhere: no DAGSTER_HOME, no
    OpenAI key, no database or Qdrant settings, a data directory of its own.
    """
    import os
    import re
    import subprocess

    drop = (
        "DAGSTER_HOME",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "DATABASE_URL",
        "QDRANT_URL",
        "QDRANT_PATH",
        "ETL_TENANTS_FILE",
        "EMBEDDING_PROVIDER",
        "EMBEDDING_MODEL",
        "EMBEDDING_DIMENSIONS",
    )
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("DAGSTER_PG")}
    env.update(ETL_DATA_DIR=str(tmp_path / "data"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "etl_assets.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )

    demo = cli("demo", "--tenant", "2")  # the smaller bundled tenant keeps this under a minute
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    for noise in ("Event loop is closed", "Task exception was never retrieved", "Traceback"):
        assert noise not in demo.stdout + demo.stderr, noise
    rows = re.findall(r"^(\S+)\s+(projects|wits|statuses|issues)\s+(\d+)\s+(\d+)\s+(client_\S+)$", demo.stdout, re.M)
    assert {(t, e) for t, e, *_ in rows} == {("2", e) for e in ("projects", "wits", "statuses", "issues")}
    for tenant, entity, live, points, collection in rows:
        assert collection == f"client_{tenant}_{entity}"
        assert int(live) > 0 and int(points) >= int(live), (tenant, entity, live, points)  # long issues: chunks

    hits = cli(
        "search", "login fails with unicode password", "--tenant", "2", "--as", "anna.schmidt@example.com", "-k", "3"
    )
    assert hits.returncode == 0, hits.stderr
    header, *found = hits.stdout.strip().splitlines()
    # At most three hits, the ones above the "good match" threshold; each is about signing in.
    assert header.split()[:2] == ["score", "key"] and 1 <= len(found) <= 3, hits.stdout
    assert all(re.search(r"(?i)password|sign.?in|log.?in", line) for line in found), hits.stdout
