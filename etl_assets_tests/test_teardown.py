"""Clean teardown: the async clients live and die inside the step's event loop.

The vector steps run in a child interpreter with ``-X dev -W error`` and asyncio debug on,
against the loopback embeddings server with pooled keep-alive connections. The output and
Dagster's event log must hold none of the lines the old design printed on every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from etl_assets.core.embeddings.factory import EmbeddingSettings, open_embedder
from etl_assets.defs.resources import EmbeddingsResource
from etl_assets.fakes.loopback import LoopbackServer
from etl_assets.fakes.openai_server import FakeEmbeddings

FORBIDDEN = (
    "Event loop is closed",
    "Task exception was never retrieved",
    "unclosed",
    "ResourceWarning",
    "was never awaited",
    "Unclosed",
)

CHILD = textwrap.dedent(
    """
    import contextlib, json
    import dagster as dg
    import etl_assets.core.embeddings.openai_provider as op
    from etl_assets.defs.build import build_definitions

    clients = []
    real_open = op.open_openai_embedder

    @contextlib.asynccontextmanager
    async def recording_open(**kwargs):
        async with real_open(**kwargs) as embedder:
            clients.append(embedder.client)
            yield embedder

    op.open_openai_embedder = recording_open  # observe the real client; nothing is replaced
    defs = build_definitions()
    job = defs.resolve_job_def("jira_sync")
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(partition_key="1", instance=instance, raise_on_error=False)
        records = instance.get_records_for_run(result.run_id).records
        log_text = "\\n".join(
            (r.event_log_entry.user_message or "") + " " + str(r.event_log_entry.dagster_event or "")
            for r in records
        )
    print("RESULT " + json.dumps({
        "success": result.success,
        "clients": len(clients),
        "closed": [c.is_closed() for c in clients],
        "log_text": log_text,
    }))
    """
)


@pytest.mark.slow
def test_vector_steps_tear_down_cleanly_under_dev_mode(env, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    process_env = env.process_env()
    process_env["PYTHONASYNCIODEBUG"] = "1"
    process_env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    (tmp_path / "dagster_home").mkdir()
    cmd = [
        sys.executable,
        "-X",
        "dev",
        "-W",
        "error",
        # Third-party deprecations are not ours to fix and would abort before our code runs;
        # ResourceWarning and every other category stay errors.
        "-W",
        "ignore::DeprecationWarning",
        "-W",
        "ignore::PendingDeprecationWarning",
        "-W",
        "ignore::FutureWarning",
        str(script),
    ]
    proc = subprocess.run(cmd, env=process_env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    assert result["success"], output[-4000:]
    for needle in FORBIDDEN:
        assert needle not in output, f"{needle!r} in the child's output:\n{output[-4000:]}"
        assert needle not in result["log_text"], f"{needle!r} in Dagster's event log"
    # One client for the run, closed by the resource inside the loop, not by the garbage collector.
    assert result["clients"] == 1 and result["closed"] == [True]
    # Keep-alive pooling really happened: many requests over few connections, all closed now.
    assert env.embeddings.requests >= 4
    assert env.embeddings.connections_opened < env.embeddings.requests
    assert env.embeddings.server.connections_active == 0


# -- fast: the pool is closed when the resource or open_embedder exits ----------------------------

FAST_DIMENSIONS = 8


def _settings(fake: FakeEmbeddings) -> dict[str, Any]:
    return {
        "provider": "openai",
        "api_key": "sk-test-teardown",
        "base_url": fake.url,
        "dimensions": FAST_DIMENSIONS,
        "concurrency": 4,
    }


@contextlib.asynccontextmanager
async def _via_resource(fake: FakeEmbeddings) -> AsyncIterator[Any]:
    resource = EmbeddingsResource(**_settings(fake))
    async with resource.yield_for_execution(dg.build_init_resource_context()) as opened:
        yield opened.embedder


@contextlib.asynccontextmanager
async def _via_factory(fake: FakeEmbeddings) -> AsyncIterator[Any]:
    async with open_embedder(EmbeddingSettings(**_settings(fake))) as embedder:
        yield embedder


def _open_connections_after(server: LoopbackServer, timeout_s: float = 3.0) -> int:
    # The server learns of a client's close asynchronously, on its own loop: give it a moment.
    deadline = time.monotonic() + timeout_s
    while server.connections_active and time.monotonic() < deadline:
        time.sleep(0.01)
    return server.connections_active


@pytest.mark.parametrize("opener", [_via_resource, _via_factory], ids=["EmbeddingsResource", "open_embedder"])
def test_the_embeddings_pool_is_closed_on_exit(opener: Callable[[FakeEmbeddings], Any]) -> None:
    """The slow test above proves this under -X dev in a real run; this one says it in a second."""
    with FakeEmbeddings(dimensions=FAST_DIMENSIONS, latency_s=0.05) as fake:

        async def go() -> tuple[Any, int]:
            async with opener(fake) as embedder:
                # Requests in flight together: the pool opens several keep-alive connections.
                await asyncio.gather(*(embedder.embed([f"text {i}"]) for i in range(6)))
                open_inside = fake.server.connections_active
            return embedder, open_inside

        embedder, open_inside = asyncio.run(go())  # the embedder is still referenced: no GC closes it
        assert fake.requests == 6
        assert open_inside >= 2, "the pool never held connections, so closing it proves nothing"
        assert _open_connections_after(fake.server) == 0, "connections outlived the embedder"
        assert embedder.client.is_closed()


CLI_COMMANDS = {
    "dagster": [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "etl_assets.definitions",
        "--select",
        "*",
        "--partition",
        "1",
    ],
    "dg": [str(Path(sys.executable).with_name("dg")), "launch", "--assets", "*", "--partition", "1"],
}


@pytest.mark.slow
@pytest.mark.parametrize("cli", sorted(CLI_COMMANDS))
def test_cli_materializes_a_partition_on_a_fresh_home(env, tmp_path, cli):
    home = tmp_path / "fresh_home"
    home.mkdir()
    process_env = {**env.process_env(), "DAGSTER_HOME": str(home)}
    proc = subprocess.run(
        CLI_COMMANDS[cli],
        cwd=Path(__file__).resolve().parents[1],
        env=process_env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "RUN_SUCCESS" in proc.stdout + proc.stderr
    from etl_assets.core.catalogue import CATALOGUE
    from etl_assets_tests.test_graph import table_rows

    site = env.tenants["1"].site
    expected = {
        "projects": len(site.projects),
        "wits": len(site.issue_types),
        "statuses": len(site.statuses),
        "issues": len(site.issues),
    }
    for spec in CATALOGUE:
        if spec.name in expected:  # the Jira entities whose count the site gives
            assert len(table_rows(env, spec, "1")) == expected[spec.name]
        assert table_rows(env, spec, "2") == []


# -- an interrupted run: the step's task is cancelled before its clients close ---------------------

INTERRUPTED_CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys, threading
    import dagster as dg
    from etl_assets.defs.resources import QdrantResource

    unwound = []

    @dg.asset
    async def busy(qdrant: QdrantResource) -> None:
        client = qdrant.client
        # Interrupted, as a run terminated from the UI or by Ctrl-C is, while it awaits the store.
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            while True:
                await client.get_collections()
                await asyncio.sleep(0.001)
        finally:
            # Reached while the resource is still open: the client answers one last time.
            unwound.append(len((await client.get_collections()).collections))

    defs = dg.Definitions(assets=[busy], resources={"qdrant": QdrantResource(path=sys.argv[1])})
    try:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(raise_on_error=False)
        print("RESULT", result.success)
    except KeyboardInterrupt:
        print("RESULT interrupted")
    print("UNWOUND", unwound)
    """
)


def test_an_interrupted_step_unwinds_before_its_clients_close(tmp_path):
    """A run interrupted while its async step awaits: Dagster abandons the step's task and tears
    the resources down on the same loop. The task is cancelled there (its ``finally`` runs with
    the client open), not left to hit the closed client as an error no one reads."""
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED_CHILD)
    cmd = [sys.executable, "-X", "dev", "-W", "ignore::DeprecationWarning", str(script), str(tmp_path / "qdrant")]
    env = {**os.environ, "PYTHONASYNCIODEBUG": "1", "DAGSTER_HOME": str(tmp_path)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    output = proc.stdout + proc.stderr
    assert "RESULT" in proc.stdout, output[-4000:]
    assert "UNWOUND [0]" in proc.stdout, output[-4000:]
    for needle in (*FORBIDDEN, "Task was destroyed but it is pending", "client is closed"):
        assert needle not in output, f"{needle!r} in the child's output:\n{output[-4000:]}"
