"""Changing the embedding model without downtime: the re-index job over loopback servers.

The graph is synced with one model (the fake OpenAI endpoint, ``text-embedding-3-small``),
then the ``reindex_embeddings`` job moves tenant 1 to another model. Asserted: search answers
from the old index while the new one is built or when a gate fails, and from the new one after
the switch; a search with the wrong model is refused; a build that fails or is killed (SIGKILL)
midway resumes without embedding again what it had; the names users see stay ``client_<tenant>_<entity>``; the old
generation is kept for rollback until dropped. Local mode and the loopback Qdrant server alike.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from etl_assets.cli import error_line
from etl_assets.core.catalogue import CATALOGUE
from etl_assets.core.embeddings.factory import open_embedder
from etl_assets.core.reindex import layout
from etl_assets.core.search import ModelMismatchSearchError, search
from etl_assets.core.settings import EmbeddingSettings
from etl_assets.core.vectorstore import collection_name, open_qdrant
from etl_assets.defs import names
from etl_assets.defs.build import build_definitions
from etl_assets.defs.resources import QdrantResource
from etl_assets.fakes.loopback import LoopbackServer, Request, Response
from etl_assets.fakes.qdrant_server import FakeQdrant
from etl_assets_tests.conftest import TEST_DIMENSIONS, Env

OLD = "text-embedding-3-small"
NEW = "text-embedding-3-large"
QUERY = "login fails with unicode password"
pytestmark = pytest.mark.slow


def reindex_run(env: Env, qdrant_url: str | None = None, **config: Any) -> dg.ExecuteInProcessResult:
    resources = env.resources()
    if qdrant_url:
        resources["qdrant"] = QdrantResource(url=qdrant_url)
    defs = build_definitions(registry=env.registry, resources=resources, env={"DATABASE_URL": env.database_url})
    job = defs.resolve_job_def(names.REINDEX_JOB)
    run_config = {"ops": {names.REINDEX_OP: {"config": {"tenant": "1", "quality_sample_issues": 60, **config}}}}
    return job.execute_in_process(run_config=run_config, raise_on_error=False)


def settings(env: Env, model: str, base_url: str | None = None) -> EmbeddingSettings:
    return EmbeddingSettings(
        provider="openai",
        api_key="sk-test-embeddings-secret",
        base_url=base_url or env.embeddings.url,
        model=model,
        dimensions=TEST_DIMENSIONS,
    )


def search_with(env: Env, model: str, server_folder: str | None = None) -> list[str]:
    """The keys ``model``'s search returns, from the graph's embedded store or from the folder of a stopped
    loopback server (qdrant-client local mode: opened as such, never migrated to the embedded engine)."""

    async def go() -> list[str]:
        async with (
            open_embedder(settings(env, model)) as embedder,
            open_qdrant(
                None, None, server_folder or env.qdrant_path, engine="local" if server_folder else "edge"
            ) as client,
        ):
            hits = await search(client, embedder, QUERY, tenant_id="1", access=None, k=5)
        return [h.key for h in hits]

    return asyncio.run(go())


def aliases(env: Env, qdrant_url: str | None = None) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with open_qdrant(qdrant_url, None, env.qdrant_path) as client:
            out = {}
            for spec in CATALOGUE:
                found = await layout(client, collection_name("1", spec.name))
                out[spec.name] = (found.served, found.is_alias, sorted(found.generations.values()))
            return out

    return asyncio.run(go())


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    events = result.get_step_failure_events()
    error = events[0].step_failure_data.error if events else None
    return error_line(error, limit=2000) if error is not None else ""


def test_reindex_switches_the_alias_and_search_follows(env: Env) -> None:
    env.materialize("1")
    old_hits = search_with(env, OLD)
    assert old_hits

    result = reindex_run(env, model=NEW, dimensions=TEST_DIMENSIONS)
    assert result.success, failure_text(result)
    after = aliases(env)
    for spec in CATALOGUE:
        name = collection_name("1", spec.name)
        # The name stays; behind it generation 1 (new model) serves, generation 0 (the old) is kept.
        assert after[spec.name] == (f"{name}__1", True, [f"{name}__0", f"{name}__1"])
    # The fake's vectors depend on the text only, so the new model ranks exactly as the old did.
    assert search_with(env, NEW) == old_hits
    with pytest.raises(ModelMismatchSearchError):
        search_with(env, OLD)  # the wrong model is refused, as before

    # The graph keeps syncing under the same name once EMBEDDING_MODEL is the new model.
    run = env.materialize("1", "key:vectors/issues_vectors", model=NEW)
    [mat] = [
        m for m in run.get_asset_materialization_events() if m.asset_key == dg.AssetKey(["vectors", "issues_vectors"])
    ]
    assert mat.materialization.metadata["collection"].value == "client_1_issues"
    assert all(c.passed for c in run.get_asset_check_evaluations())

    # Rollback puts the old generation back; drop removes what no alias serves.
    assert reindex_run(env, action="rollback").success
    assert aliases(env)["issues"][0] == "client_1_issues__0"
    assert search_with(env, OLD) == old_hits
    assert reindex_run(env, action="drop", entities=["issues"]).success
    assert aliases(env)["issues"] == ("client_1_issues__0", True, ["client_1_issues__0"])


def _failing_after(env: Env, allowed: int) -> LoopbackServer:
    """An embeddings endpoint that serves ``allowed`` requests (through the fake), then answers 400."""
    seen = {"requests": 0}
    lock = threading.Lock()

    def handle(req: Request) -> Response:
        with lock:
            seen["requests"] += 1
            n = seen["requests"]
        if n > allowed:
            return Response.json({"error": {"message": "refused by the test", "type": "invalid_request_error"}}, 400)
        return env.embeddings._handle(req)

    return LoopbackServer(handle).start()


def output_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    [event] = [e for e in result.all_node_events if e.is_successful_output]
    return {k: v.value for k, v in event.step_output_data.metadata.items()}


def rows_with_points(env: Env, name: str) -> int:
    """Rows with every one of their chunks in ``name`` (a row whose chunk 0 landed but a later
    chunk did not is embedded again by the resumed run, rightly)."""

    async def count() -> int:
        async with open_qdrant(None, None, env.qdrant_path) as client:
            seen: dict[str, set[int]] = {}
            expected: dict[str, int] = {}
            offset = None
            while True:
                page, offset = await client.scroll(name, limit=256, offset=offset, with_payload=True)
                for p in page:
                    payload = p.payload or {}
                    seen.setdefault(payload["external_id"], set()).add(payload["chunk"])
                    expected[payload["external_id"]] = payload["chunks"]
                if offset is None:
                    break
            return sum(1 for ext, chunks in seen.items() if 0 in chunks and len(chunks) == expected[ext])

    return asyncio.run(count())


@pytest.mark.sites(n_issues=120)
def test_a_reindex_stopped_midway_keeps_the_old_index_and_resumes(env: Env) -> None:
    env.materialize("1")
    old_hits = search_with(env, OLD)
    server = _failing_after(env, allowed=3)
    try:
        # Small requests, so that three of them are a part of the build and the fourth fails it.
        failed = reindex_run(
            env, model=NEW, dimensions=TEST_DIMENSIONS, base_url=server.url + "/v1", entities=["issues"], batch_inputs=8
        )
    finally:
        server.stop()
    assert not failed.success
    assert "refused by the test" in failure_text(failed)
    assert aliases(env)["issues"] == ("client_1_issues", False, ["client_1_issues__1"])  # the old one serves
    assert search_with(env, OLD) == old_hits
    done = rows_with_points(env, "client_1_issues__1")
    assert 0 < done < 120

    resumed = reindex_run(env, model=NEW, dimensions=TEST_DIMENSIONS, entities=["issues"])
    assert resumed.success, failure_text(resumed)
    assert aliases(env)["issues"][0] == "client_1_issues__1"
    # The rows the stopped run had written were not embedded again.
    assert output_metadata(resumed)["issues_rows_embedded"] == 120 - done
    assert search_with(env, NEW) == old_hits


# The gate compares two models' retrieval (a local-model sync and two sample indexes: the slowest
# test here); the database under it changes nothing the other re-index tests do not cover on both.
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_failing_quality_gate_leaves_the_alias_where_it_was(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # The served model is the local MiniLM (it retrieves the labelled queries well); the new one
    # is the fake endpoint, whose vectors ignore meaning: retrieval is worse, nothing switches.
    env.materialize("1", provider="local", dimensions=None, api_key=None, base_url=None)
    before = aliases(env)
    monkeypatch.setenv("NEW_EMBEDDINGS_KEY", "sk-test-embeddings-secret")
    result = reindex_run_local(env, model=NEW, api_key_env="NEW_EMBEDDINGS_KEY")
    assert not result.success
    message = failure_text(result)
    assert "retrieval_not_worse" in message and "alias was not switched" in message
    after = aliases(env)
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}
    assert all(not v[1] for v in after.values())  # still the original collections, no alias made


def reindex_run_local(env: Env, **config: Any) -> dg.ExecuteInProcessResult:
    resources = env.resources(provider="local", dimensions=None, api_key=None, base_url=None)
    defs = build_definitions(registry=env.registry, resources=resources, env={"DATABASE_URL": env.database_url})
    job = defs.resolve_job_def(names.REINDEX_JOB)
    target = {"provider": "openai", "base_url": env.embeddings.url, "dimensions": TEST_DIMENSIONS}
    run_config = {
        "ops": {names.REINDEX_OP: {"config": {"tenant": "1", "quality_sample_issues": 60, **target, **config}}}
    }
    return job.execute_in_process(run_config=run_config, raise_on_error=False)


def test_reindex_on_the_qdrant_server(env: Env, tmp_path) -> None:
    # The loopback server keeps its data in a local-mode folder: searches read that folder while
    # the server is stopped (the fake serves the write and alias API, not the query API).
    folder = str(tmp_path / "server")
    with FakeQdrant(folder) as qdrant:
        resources = env.resources()
        resources["qdrant"] = QdrantResource(url=qdrant.url)
        defs = build_definitions(registry=env.registry, resources=resources, env={"DATABASE_URL": env.database_url})
        job = defs.resolve_implicit_global_asset_job_def()
        assert job.execute_in_process(partition_key="1").success
    old_hits = search_with(env, OLD, folder)
    with FakeQdrant(folder) as qdrant:
        result = reindex_run(
            env, qdrant_url=qdrant.url, model=NEW, dimensions=TEST_DIMENSIONS, entities=["issues", "projects"]
        )
        assert result.success, failure_text(result)
        state = aliases(env, qdrant.url)
        assert any(p == "/collections/aliases" for _, p, *_ in qdrant.log)
    assert state["issues"] == ("client_1_issues__1", True, ["client_1_issues__0", "client_1_issues__1"])
    assert state["projects"][:2] == ("client_1_projects__1", True)
    assert state["statuses"] == ("client_1_statuses", False, [])  # not chosen: untouched
    assert search_with(env, NEW, folder) == old_hits
    with pytest.raises(ModelMismatchSearchError):
        search_with(env, OLD, folder)


_CHILD = """
import json, sys
from etl_assets.defs import names
from etl_assets.defs.build import build_definitions

job = build_definitions().resolve_job_def(names.REINDEX_JOB)
job.execute_in_process(run_config=json.loads(sys.argv[1]))
"""


@pytest.mark.sites(n_issues=120)
def test_a_reindex_killed_midway_keeps_the_old_index_and_resumes(env: Env, tmp_path) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    env.materialize("1")
    old_hits = search_with(env, OLD)
    config = {"tenant": "1", "model": NEW, "dimensions": TEST_DIMENSIONS, "entities": ["issues"]}
    run_config = {"ops": {names.REINDEX_OP: {"config": {**config, "quality_sample_issues": 60}}}}
    child_env = {
        **env.process_env(),
        "EMBEDDING_BATCH_INPUTS": "4",  # many small requests: the kill lands in the middle of the build
        "DAGSTER_HOME": str(tmp_path / "home"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    (tmp_path / "home").mkdir()
    env.embeddings.latency_s = 0.2  # slow enough to be killed in the middle of the build
    env.embeddings.reset_counters()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(run_config)],
        env=child_env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while env.embeddings.requests < 6 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.poll() is None, "the re-index ended before it could be killed"
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    env.embeddings.latency_s = 0.0

    assert aliases(env)["issues"] == ("client_1_issues", False, ["client_1_issues__1"])  # the old one serves
    assert search_with(env, OLD) == old_hits
    done = rows_with_points(env, "client_1_issues__1")
    assert 0 < done < 120

    resumed = reindex_run(env, **config)
    assert resumed.success, failure_text(resumed)
    assert aliases(env)["issues"][0] == "client_1_issues__1"
    assert output_metadata(resumed)["issues_rows_embedded"] == 120 - done
    assert search_with(env, NEW) == old_hits


NEW_DIMENSIONS = 32  # the target model's own size: a point with it can only come from the target model


def _issue_point(env: Env, name: str, external_id: str) -> Any:
    from etl_assets.core.vectorstore import point_id

    async def go() -> Any:
        async with open_qdrant(None, None, env.qdrant_path) as client:
            [point] = await client.retrieve(name, [point_id("1", "issues", external_id, 0)], with_vectors=True)
            info = await client.get_collection(name)
            return point, dict(info.config.metadata or {})

    return asyncio.run(go())


def test_an_incremental_sync_follows_a_reindex_build(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from etl_assets.core.reindex import TARGET_KEY
    from etl_assets.fakes.openai_server import FakeEmbeddings

    env.materialize("1")
    site = env.tenants["1"].site
    issue = site.issues[3]
    monkeypatch.setenv("NEW_EMBEDDINGS_KEY", "sk-test-new-endpoint-secret")
    with FakeEmbeddings(dimensions=TEST_DIMENSIONS) as target:
        # The build, checked but not switched: a re-index in progress (the state a killed one leaves too).
        built = reindex_run(
            env,
            model=NEW,
            dimensions=NEW_DIMENSIONS,
            base_url=target.url,
            api_key_env="NEW_EMBEDDINGS_KEY",
            entities=["issues"],
            swap=False,
            tolerance=1.0,  # the fake's vectors carry no meaning; the gate is not what is tested here
        )
        assert built.success, failure_text(built)
        assert aliases(env)["issues"] == ("client_1_issues", False, ["client_1_issues__1"])
        before, meta = _issue_point(env, "client_1_issues__1", issue["id"])
        recorded = meta[TARGET_KEY]
        assert recorded == {
            "provider": "openai",
            "model": NEW,
            "dimensions": NEW_DIMENSIONS,
            "base_url": target.url,
            "chunk_tokens": None,
            "api_key_env": "NEW_EMBEDDINGS_KEY",
        }
        assert "secret" not in repr(meta)  # the key's variable is named, the key never stored

        # An incremental sync with the served (old) model changes one issue ...
        site.touch_issue(issue["key"], summary="Rewritten while the new index is being built")
        target.reset_counters()
        run = env.materialize("1")
        assert run.success
        [mat] = [
            m
            for m in run.get_asset_materialization_events()
            if m.asset_key == dg.AssetKey(["vectors", "issues_vectors"])
        ]
        assert mat.materialization.metadata["reindex_followed"].value == "client_1_issues__1"
        assert mat.materialization.metadata["reindex_rows_changed"].value == 1
        assert target.inputs >= 1  # ... and the target endpoint embedded it
        # ... into the building generation, with the new model's vectors.
        after, _ = _issue_point(env, "client_1_issues__1", issue["id"])
        assert "Rewritten while the new index is being built" in after.payload["text"]
        assert "Rewritten while the new index is being built" not in before.payload["text"]
        assert len(after.vector["dense"]) == NEW_DIMENSIONS
        assert after.payload["content_hash"] != before.payload["content_hash"]
        served, _ = _issue_point(env, "client_1_issues", issue["id"])
        assert "Rewritten while the new index is being built" in served.payload["text"]  # both followed
        assert len(served.vector["dense"]) == TEST_DIMENSIONS

        # The switch: the catch-up has nothing left to embed; the recorded target is cleared.
        target.reset_counters()
        swapped = reindex_run(
            env,
            model=NEW,
            dimensions=NEW_DIMENSIONS,
            base_url=target.url,
            api_key_env="NEW_EMBEDDINGS_KEY",
            entities=["issues"],
            tolerance=1.0,
        )
        assert swapped.success, failure_text(swapped)
        assert output_metadata(swapped)["issues_rows_embedded"] == 0
        assert aliases(env)["issues"][0] == "client_1_issues__1"
        _, meta = _issue_point(env, "client_1_issues__1", issue["id"])
        assert meta.get(TARGET_KEY) is None


def test_a_sync_does_not_fail_when_the_build_cannot_be_followed(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.materialize("1")
    monkeypatch.setenv("NEW_EMBEDDINGS_KEY", "sk-test-embeddings-secret")
    built = reindex_run(
        env, model=NEW, dimensions=TEST_DIMENSIONS, api_key_env="NEW_EMBEDDINGS_KEY", swap=False, entities=["issues"]
    )
    assert built.success, failure_text(built)
    monkeypatch.delenv("NEW_EMBEDDINGS_KEY")
    site = env.tenants["1"].site
    site.touch_issue(site.issues[0]["key"], summary="Changed with the target key unset")
    run = env.materialize("1")
    assert run.success  # the served index is in sync; the build's catch-up will embed the change
    [mat] = [
        m for m in run.get_asset_materialization_events() if m.asset_key == dg.AssetKey(["vectors", "issues_vectors"])
    ]
    error = mat.materialization.metadata["reindex_follow_error"].value
    assert "NEW_EMBEDDINGS_KEY" in error and "client_1_issues__1" in error
    assert all(c.passed for c in run.get_asset_check_evaluations())
