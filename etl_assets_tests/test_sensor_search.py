"""The change sensor asks Jira cheaply and runs only tenants that changed; search over the index."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import dagster as dg
import pytest

from etl_assets.core.embeddings.base import ModelMismatchError
from etl_assets.core.embeddings.factory import EmbeddingSettings, open_embedder
from etl_assets.core.search import search
from etl_assets.core.vectorstore import open_qdrant
from etl_assets_tests.test_issues import ISSUE_ASSETS


def evaluate(env, cursor=None):
    d = env.definitions()
    sensor = d.resolve_sensor_def("jira_issue_changes")
    res = env.resources()
    with dg.DagsterInstance.ephemeral() as instance:
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"jira": res["jira"], "database": res["database"]}
        ) as context:
            return sensor(context)


def test_change_sensor_requests_only_changed_tenants(env):
    first = evaluate(env)
    assert sorted(r.partition_key for r in first.run_requests) == ["1", "2"], "never-synced tenants are requested"
    for t in ("1", "2"):
        assert env.materialize(t).success
    quiet = evaluate(env)
    assert quiet.run_requests == []
    assert "nothing changed" in quiet.skip_reason.skip_message and "tenant 1" in quiet.skip_reason.skip_message
    site = env.tenants["1"].site
    searches_before = sum(1 for m, p in site.requests if p.endswith("/search/jql"))
    site.touch_issue(site.issues[0]["key"], summary="Touched after the sync")
    changed = evaluate(env, cursor=quiet.cursor)
    assert [r.partition_key for r in changed.run_requests] == ["1"]
    assert sum(1 for m, p in site.requests if p.endswith("/search/jql")) == searches_before + 1, "one probe per tenant"
    # The same change is not requested twice; after the sync it is no longer a change at all.
    again = evaluate(env, cursor=changed.cursor)
    assert again.run_requests == [] and "already requested" in again.skip_reason.skip_message
    assert env.materialize("1", ISSUE_ASSETS).success
    assert evaluate(env, cursor=changed.cursor).run_requests == []


def test_change_sensor_reports_a_failing_tenant_and_keeps_checking_others(env, capfd):
    for t in ("1", "2"):
        assert env.materialize(t).success
    down = env.tenants["1"].url
    env.tenants["1"].server.stop()
    # Nothing changed at tenant 2: the skip reason is the whole report, and must name the failure.
    quiet = evaluate(env)
    assert quiet.run_requests == []
    report = quiet.skip_reason.skip_message
    assert "tenant 1: skipped, probe failed" in report and down in report and "connection failed" in report, report
    assert "tenant 2: skipped, nothing changed" in report, report
    # Tenant 2 changes: its run is requested, and the sensor's log (Dagster prints a sensor's
    # context.log lines to stderr when no tick stores them) still reports tenant 1 and why.
    env.tenants["2"].site.touch_issue(env.tenants["2"].site.issues[0]["key"], summary="changed")
    capfd.readouterr()
    result = evaluate(env, cursor=quiet.cursor)
    assert [r.partition_key for r in result.run_requests] == ["2"]
    logged = capfd.readouterr().err
    failures = [line for line in logged.splitlines() if "tenant 1:" in line]
    assert len(failures) == 1, logged[-3000:]
    assert "probe failed" in failures[0] and down in failures[0] and "connection failed" in failures[0], failures
    assert any("tenant 2: changed at" in line for line in logged.splitlines()), logged[-3000:]


def _search(env, query, **kw):
    settings = EmbeddingSettings(
        provider="openai",
        api_key="sk-test-embeddings-secret",
        base_url=env.embeddings.url,
        dimensions=kw.pop("dimensions", 64),
        model=kw.pop("model", None),
    )

    async def go():
        async with open_embedder(settings) as embedder, open_qdrant(None, None, env.qdrant_path) as client:
            return await search(
                client, embedder, query, tenant_id=kw.pop("tenant_id", "1"), access=kw.pop("access", None), **kw
            )

    return asyncio.run(go())


def test_search_ranks_the_matching_issue_first_and_filters(env):
    env.materialize("1")
    site = env.tenants["1"].site
    target = next(i for i in site.issues if i["key"] not in site.long_issue_keys)
    from etl_assets_tests.test_graph import all_points

    point = next(p for p in all_points(env)["client_1_issues"] if p.payload["key"] == target["key"])
    # The fake's vectors are a hash of the text: the chunk's own text is the only exact match.
    hits = _search(env, point.payload["text"], k=5, mode="dense")
    assert hits[0].key == target["key"] and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert len({h.external_id for h in hits}) == len(hits) <= 5
    project = target["fields"]["project"]["key"]
    assert all(h.payload["project_key"] == project for h in _search(env, "anything", project=project, k=50))
    done = _search(env, "anything", status_category="done", k=50)
    assert done and all(h.payload["status_category"] == "done" for h in done)


def test_search_refuses_a_different_model(env):
    env.materialize("1", "key:jira/raw/raw_jira_projects+ or key:vectors/projects_vectors")
    with pytest.raises(ModelMismatchError, match="text-embedding-3-large"):
        _search(env, "x", entity="projects", model="text-embedding-3-large")
    with pytest.raises(ModelMismatchError, match="32"):
        _search(env, "x", entity="projects", dimensions=32)


@pytest.mark.slow
def test_search_command_prints_ranked_hits(env):
    env.materialize("1")
    site = env.tenants["1"].site
    target = next(i for i in site.issues if i["key"] not in site.long_issue_keys)
    from etl_assets_tests.test_graph import all_points

    text = next(p for p in all_points(env)["client_1_issues"] if p.payload["key"] == target["key"]).payload["text"]
    proc = subprocess.run(
        [sys.executable, "-m", "etl_assets.cli", "search", text, "--tenant", "1", "--unrestricted", "-k", "3"],
        env=env.process_env(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()[1:]  # after the header
    assert len(lines) == 3 and target["key"] in lines[0]
    wrong = subprocess.run(
        [sys.executable, "-m", "etl_assets.cli", "search", "x", "--tenant", "1", "--unrestricted"],
        env={**env.process_env(), "EMBEDDING_MODEL": "text-embedding-3-large"},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert wrong.returncode == 2 and "built with" in wrong.stderr
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = subprocess.run(
        [sys.executable, "-m", "etl_assets.cli", "search", "x", "--tenant", "1", "--unrestricted"],
        env={**env.process_env(), "QDRANT_URL": f"http://127.0.0.1:{closed}", "QDRANT_API_KEY": "qdrant-SECRETVALUE"},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert down.returncode == 2, down.stderr
    assert f"QDRANT_URL=http://127.0.0.1:{closed}" in down.stderr and "Traceback" not in down.stderr, down.stderr
    assert "SECRETVALUE" not in down.stderr
