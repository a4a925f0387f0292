"""The fan-out first sync: ids listed cheaply, issues bulk-fetched in parallel under an adaptive
limit, landed as they arrive; everything downstream equal to the paged path's."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from etl_assets.core.fanout import AdaptiveLimit, run_fanned_out
from etl_assets.core.pipeline import FanOutOptions, fetch_fanned_out
from etl_assets.core.records import FetchRequest
from etl_assets.core.sources.jira import tables
from etl_assets.core.sources.jira.client import JiraClient
from etl_assets.core.sources.jira.sample import generate_sample_site, sample_transport
from etl_assets.core.sources.jira.sample.documents import add_comments, lengthen_changelog
from etl_assets.core.sources.jira.sample.permissions import site_permission_fixture
from etl_assets.core.sources.jira.source import JiraSiteConfig
from etl_assets.core.sources.jira.specs import ISSUES, PROJECTS
from etl_assets.core.store import ops, schema
from etl_assets.core.store.db import make_engine
from etl_assets.core.tenants import Tenant

VOLATILE = {"id", "first_seen_at", "synced_at"}


# -- the adaptive limit ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_429_halves_the_limit_and_holds_new_requests_for_its_retry_after():
    clock = Clock()
    limit = AdaptiveLimit(8, initial=8, clock=clock)
    limit.observe(429, {"Retry-After": "3", "RateLimit-Reason": "jira-burst-based"})
    assert limit.limit == 4 and limit.stats.throttled == 1 and limit.stats.decreases == 1
    assert limit.acquire(timeout=0) is False, "held until the Retry-After has passed"
    clock.now += 3
    assert limit.acquire(timeout=0) is True
    limit.observe(429, {})
    limit.observe(429, {})
    limit.observe(429, {})
    assert limit.limit == 1, "never below one"
    assert limit.stats.reasons == {"jira-burst-based"} and limit.stats.held_s == 3


def test_the_limit_recovers_one_request_per_round_trip_and_backs_off_near_the_source_limit():
    limit = AdaptiveLimit(8, initial=2)
    for _ in range(2):
        limit.observe(200, {})
    assert limit.limit == 2, "two answers at a limit of 2: not yet a whole round trip more"
    limit.observe(200, {})
    assert limit.limit == 3
    for _ in range(100):
        limit.observe(200, {})
    assert limit.limit == 8 and limit.stats.peak == 8, "capped at the maximum"
    limit.observe(200, {"X-RateLimit-NearLimit": "true"})
    assert limit.limit == 7 and limit.stats.near_limit == 1
    for _ in range(3):
        limit.acquire()
    limit.observe(200, {"X-RateLimit-Remaining": "1"})  # fewer left than the 3 in flight
    assert limit.limit == 6


def test_the_runner_never_exceeds_the_limit_and_stops_at_the_first_failure():
    limit = AdaptiveLimit(4, initial=3)
    busy, peak, lock = [0], [0], threading.Lock()
    gate = threading.Event()

    def work(n: int) -> int:
        with lock:
            busy[0] += 1
            peak[0] = max(peak[0], busy[0])
        gate.wait(0.01)
        with lock:
            busy[0] -= 1
        return n * n

    results = dict(run_fanned_out(range(40), work, limit))
    assert results == {n: n * n for n in range(40)} and 1 <= peak[0] <= 3

    def failing(n: int) -> int:
        if n == 5:
            raise RuntimeError("chunk 5 failed")
        return n

    seen = []
    with pytest.raises(RuntimeError, match="chunk 5 failed"):
        for n, _ in run_fanned_out(range(1000), failing, AdaptiveLimit(2)):
            seen.append(n)
    assert len(seen) < 20, "no new work after the failure"


def test_then_runs_once_the_request_slot_is_free_and_counts_until_done():
    # One item at a time: while `then` runs, its request slot is free already, and no other item
    # has started (it still counts against the maximum).
    single = AdaptiveLimit(1)
    seen_in_flight: list[int] = []
    results = dict(
        run_fanned_out(range(5), lambda n: n, single, then=lambda n, r: seen_in_flight.append(single.in_flight) or r)
    )
    assert results == {n: n for n in range(5)} and seen_in_flight == [0] * 5

    limit = AdaptiveLimit(3, initial=3)
    lock = threading.Lock()
    holding, peak = [0], [0]

    def work(n: int) -> int:
        with lock:
            holding[0] += 1
            peak[0] = max(peak[0], holding[0])
        return n

    def then(n: int, r: int) -> int:
        threading.Event().wait(0.005)
        with lock:
            holding[0] -= 1
        return r * 10

    assert dict(run_fanned_out(range(30), work, limit, then=then)) == {n: n * 10 for n in range(30)}
    assert 1 < peak[0] <= 3, "items run side by side, never more than the maximum until `then` is done"


def test_fewer_collections_raises_the_young_threshold_and_restores_it_after_the_last_user():
    import gc

    from etl_assets.core.fanout import FAN_OUT_GC_THRESHOLD, fewer_collections

    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold()[0] == max(before[0], FAN_OUT_GC_THRESHOLD)
        with fewer_collections():
            pass
        assert gc.get_threshold()[0] == max(before[0], FAN_OUT_GC_THRESHOLD), "still in use by the outer block"
    assert gc.get_threshold() == before


def test_group_landing_commits_every_answer_and_hands_a_failure_to_its_whole_group():
    from etl_assets.core.pipeline import _GroupLanding

    landed: list[tuple[int, int]] = []
    gate = threading.Event()

    def land(pages: list[Any], records: int) -> int:
        gate.wait(1)  # the first transaction is slow: the others queue and go together
        landed.append((len(pages), records))
        return records

    landing = _GroupLanding(land)
    threads = [threading.Thread(target=landing.land, args=([object()] * 2, 5)) for _ in range(6)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert sum(n for n, _ in landed) == 12 and sum(r for _, r in landed) == 30
    assert landing.transactions == len(landed) < 6, "answers that waited were landed together"

    def broken(pages: list[Any], records: int) -> int:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        _GroupLanding(broken).land([object()], 1)


# -- the fan-out against the sample site ----------------------------------------------------------------


def _site(n_issues: int = 260) -> Any:
    site = generate_sample_site(seed=5, n_projects=6, n_issues=n_issues)
    site_permission_fixture(site, seed=5)
    add_comments(site, site.issues[3]["key"], [f"comment {n}" for n in range(130)])  # paged comments
    lengthen_changelog(site, site.issues[4])  # a changelog longer than the fetch embeds
    return site


def _tenant(site: Any) -> Tenant:
    # Custom fields named: the fetch asks for names and schema, the rows render them.
    custom = ("Story Points", "Root cause", "Area")
    return Tenant(
        "acme", "Acme", {"jira": JiraSiteConfig(url=site.base_url, email_env="E", token_env="T", custom_fields=custom)}
    )


def _client(site: Any, sent: list[tuple[str, str, Any]] | None = None) -> Iterator[JiraClient]:
    inner = sample_transport(site)

    def record(request: httpx.Request) -> httpx.Response:
        if sent is not None:
            sent.append((request.method, request.url.path, json.loads(request.content) if request.content else None))
        return inner.handle_request(request)

    with httpx.Client(base_url=site.base_url, transport=httpx.MockTransport(record)) as http:
        yield JiraClient(http, "acme", site.base_url)


def _tables(engine: Engine, tenant_id: str) -> dict[str, list[dict[str, Any]]]:
    out = {}
    # access_facts (what permissions are computed from) are columns of these two
    for table in (tables.issues, tables.comments):
        rows = [
            {k: v for k, v in dict(r._mapping).items() if k not in VOLATILE}
            for r in engine.connect().execute(select(table).where(table.c.tenant_id == tenant_id))
        ]
        out[table.name] = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))
    return out


def _sequential(engine: Engine, site: Any, tenant: Tenant) -> None:
    for client in _client(site):
        for spec in (PROJECTS, ISSUES):
            ops.land_raw(engine, spec, tenant.id, spec.fetch(client, FetchRequest(tenant, page_size=100)), kind="full")
            ops.build_table(engine, spec, tenant.id)


def _fanned(engine: Engine, site: Any, tenant: Tenant, sent: list | None = None) -> Any:
    for client in _client(site, sent):
        ops.land_raw(engine, PROJECTS, tenant.id, PROJECTS.fetch(client, FetchRequest(tenant)), kind="full")
        ops.build_table(engine, PROJECTS, tenant.id)
        result = fetch_fanned_out(
            engine, ISSUES, tenant, client, options=FanOutOptions(concurrency=4, min_records=0), page_size=100
        )
        ops.build_table(engine, ISSUES, tenant.id)
        return result


def test_a_fanned_out_first_sync_commits_exactly_what_the_paged_one_does(tmp_path: Path):
    site = _site()
    tenant = _tenant(site)
    paged, fanned = (make_engine(f"sqlite:///{tmp_path / name}.db") for name in ("paged", "fanned"))
    _sequential(paged, site, tenant)
    sent: list[tuple[str, str, Any]] = []
    result = _fanned(fanned, site, tenant, sent)
    assert result is not None and result.listed == len(site.issues) and not result.resumed
    bulk = [body for method, path, body in sent if path == "/rest/api/3/issue/bulkfetch"]
    assert len(bulk) == 3 and all(len(b["issueIdsOrKeys"]) <= 100 for b in bulk)
    assert sorted(i for b in bulk for i in b["issueIdsOrKeys"]) == sorted(i["id"] for i in site.issues)
    assert any("/comment" in path for _, path, _ in sent) and any("/changelog" in path for _, path, _ in sent)
    expected, got = _tables(paged, tenant.id), _tables(fanned, tenant.id)
    assert len(expected["issues"]) == len(site.issues) and expected["comments"]
    assert any(r["custom_fields"] for r in expected["issues"]), "custom fields were rendered"
    for name in expected:
        assert got[name] == expected[name], f"{name} differ"
    states = [ops.read_sync_state(e, tenant.id, "issues") for e in (fanned, paged)]
    assert states[0].watermark == states[1].watermark is not None
    assert states[0].syncs_since_reconcile == states[1].syncs_since_reconcile == 0


def test_a_small_listing_keeps_the_paged_path_and_a_second_fan_out_deletes_what_vanished(tmp_path: Path):
    site = _site(n_issues=40)
    tenant = _tenant(site)
    engine = make_engine(f"sqlite:///{tmp_path / 'etl.db'}")
    for client in _client(site):
        assert fetch_fanned_out(engine, ISSUES, tenant, client, options=FanOutOptions(min_records=41)) is None
        b = schema.raw_batches
        assert engine.connect().execute(select(b.c.id)).all() == [], "nothing landed for the paged path to skip"
    _fanned(engine, site, tenant)
    victim = site.issues[7]["id"]
    site.delete_issue(site.issues[7]["key"])
    site.touch_issue(site.issues[0]["key"], summary="changed after the first sync")
    _fanned(engine, site, tenant)  # a full re-sync
    issues = tables.issues
    query = select(issues.c.external_id, issues.c.summary).where(issues.c.deleted_at.is_(None))
    live = {r.external_id: r.summary for r in engine.connect().execute(query)}
    assert set(live) == {i["id"] for i in site.issues} and victim not in live
    assert live[site.issues[0]["id"]] == "changed after the first sync"


def test_every_request_of_a_fan_out_validates_against_the_openapi_spec(tmp_path: Path):
    from etl_assets_tests.corpus import load_corpus_json
    from etl_assets_tests.test_sample_site import spec_problems

    spec = load_corpus_json("jira-platform-swagger-v3.v3.json")
    site = _site(n_issues=120)
    sent: list[tuple[str, str, Any]] = []
    _fanned(make_engine(f"sqlite:///{tmp_path / 'etl.db'}"), site, _tenant(site), sent)
    kinds = {(m, re.sub(r"/issue/\d+/", "/issue/{id}/", p)) for m, p, _ in sent}
    assert ("POST", "/rest/api/3/issue/bulkfetch") in kinds
    listing = [b for m, p, b in sent if p.endswith("/search/jql") and b and b["fields"] == ["id"]]
    assert listing and listing[0]["maxResults"] == 5000
    problems = [q for m, p, b in sent for q in spec_problems(spec, m, p, {}, b)]
    assert problems == []
    # The check refuses what the bulk fetch must not send.
    assert spec_problems(spec, "POST", "/rest/api/3/issue/bulkfetch", {}, {"issueIdsOrKeys": ["1"], "expand": "x"})
    assert spec_problems(spec, "POST", "/rest/api/3/issue/bulkfetch", {}, {"fields": ["summary"]})


def test_the_sample_bulk_fetch_answers_as_jira_does(tmp_path: Path):
    from etl_assets_tests.corpus import load_corpus_json
    from etl_assets_tests.test_sample_site import schema_props

    schemas = load_corpus_json("jira-platform-swagger-v3.v3.json")["components"]["schemas"]
    site = _site(n_issues=30)
    http = httpx.Client(base_url=site.base_url, transport=sample_transport(site))
    ids = [site.issues[9]["id"], site.issues[2]["key"].lower(), "999999"]
    answer = http.post("/rest/api/3/issue/bulkfetch", json={"issueIdsOrKeys": ids, "fields": ["summary"]}).json()
    assert set(answer) <= schema_props(schemas, "BulkIssueResults")
    assert [i["id"] for i in answer["issues"]] == sorted([site.issues[9]["id"], site.issues[2]["id"]], key=int)
    assert all(set(i["fields"]) == {"summary"} for i in answer["issues"])
    too_many = http.post("/rest/api/3/issue/bulkfetch", json={"issueIdsOrKeys": [str(n) for n in range(101)]})
    assert too_many.status_code == 400
    assert http.post("/rest/api/3/issue/bulkfetch", json={"issueIdsOrKeys": ["1"], "bogus": 1}).status_code == 400
    assert http.get("/rest/api/3/issue/bulkfetch").status_code == 405


# -- through Dagster, against the loopback Jira --------------------------------------------------------


@pytest.mark.sites(n_issues=150)
def test_a_first_sync_fans_out_through_429s_and_converges_then_syncs_incrementally(env):
    from etl_assets.defs.resources import SourceResource
    from etl_assets.fakes.loopback import Fault
    from etl_assets_tests.convergence import assert_converged, materialize

    refused = {"errorMessages": ["Rate limit exceeded."]}
    headers = {"Retry-After": "0.2", "RateLimit-Reason": "jira-burst-based"}
    for _ in range(3):
        env.tenants["1"].server.faults.append(Fault.respond(429, refused, headers, path="/rest/api/3/issue/bulkfetch"))
    jira = SourceResource(source="jira", max_attempts=4, max_wait_s=1.0, fan_out_min_records=100, fan_out_concurrency=4)
    result = materialize(env, "1", resources={"jira": jira})
    assert result.success
    meta = {
        k: v.value for k, v in result.asset_materializations_for_node("jira__raw__raw_jira_issues")[0].metadata.items()
    }
    assert (meta["fan_out"], meta["fan_out_listed"], meta["fan_out_landed_before"]) == ("started", 150, 0)
    assert meta["fan_out_requests"] == 2 and meta["jira_429s"] == 3
    assert meta["fan_out_concurrency_decreases"] >= 1 and meta["fan_out_rate_limit_reasons"] == "jira-burst-based"
    assert_converged(env, "1")
    # A small site (tenant 2: 12 issues, under the threshold) keeps the paged search.
    small = materialize(env, "2", "key:jira/raw/raw_jira_issues", resources={"jira": jira})
    small_meta = small.asset_materializations_for_node("jira__raw__raw_jira_issues")[0].metadata
    assert "fan_out" not in small_meta and small_meta["fetch"].value == "full"
    # The next sync of tenant 1 is incremental: the simple path.
    env.tenants["1"].site.touch_issue(env.tenants["1"].site.issues[5]["key"], summary="edited")
    again = materialize(env, "1", resources={"jira": jira})
    again_meta = again.asset_materializations_for_node("jira__raw__raw_jira_issues")[0].metadata
    assert "fan_out" not in again_meta and again_meta["fetch"].value == "incremental"
    assert_converged(env, "1")
