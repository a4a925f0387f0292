"""Issues: incremental sync by watermark, reconciliation of deletions, change-skipping, chunking."""

from __future__ import annotations

import dagster as dg
import httpx
import pytest
from sqlalchemy import create_engine

from etl_assets.core.sources.jira.client import JiraClient, JiraError
from etl_assets.core.sources.jira.jql import search_pages
from etl_assets.core.sources.jira.source import JiraSiteConfig
from etl_assets.core.sources.jira.specs import ISSUES
from etl_assets.core.store import ops
from etl_assets.core.tenants import Tenant
from etl_assets.defs.names import raw_run_config
from etl_assets.fakes.loopback import Fault, LoopbackServer, Request, Response
from etl_assets_tests.test_graph import all_points, table_rows

ISSUE_ASSETS = "key:jira/raw/raw_jira_issues or key:tables/issues_table or key:vectors/issues_vectors"
RAW = "jira__raw__raw_jira_issues"


def meta(result, node):
    return result.asset_materializations_for_node(node)[0].metadata


def short_issue(site):
    return next(
        i
        for i in site.issues
        if i["key"] not in site.long_issue_keys
        and not i["fields"].get("parent")
        and not any((j["fields"].get("parent") or {}).get("key") == i["key"] for j in site.issues)
    )


def issue_points(env, tenant_id="1"):
    return all_points(env)[f"client_{tenant_id}_issues"]


def watermark(env, tenant_id="1"):
    engine = create_engine(env.database_url)
    try:
        return ops.read_sync_state(engine, tenant_id, "issues").watermark
    finally:
        engine.dispose()


def test_change_one_delete_another_embeds_only_the_changed_issue(env):
    site = env.tenants["1"].site
    assert env.materialize("1").success
    first_watermark = watermark(env)
    assert first_watermark is not None
    changed, doomed = [i for i in site.issues if i is short_issue(site)][0], None
    doomed = next(
        i
        for i in site.issues
        if i is not changed
        and i["key"] not in site.long_issue_keys
        and not i["fields"].get("parent")
        and not any((j["fields"].get("parent") or {}).get("key") == i["key"] for j in site.issues)
    )
    before_points = {str(p.id): p.payload for p in issue_points(env)}
    env.embeddings.reset_counters()

    site.touch_issue(changed["key"], summary="Login fails when the password has unicode characters")
    site.delete_issue(doomed["key"])
    result = env.materialize("1", ISSUE_ASSETS, run_config=raw_run_config(ISSUES, reconcile=True))
    assert result.success

    after = {str(p.id): p.payload for p in issue_points(env)}
    # The changed issue's chunks (its text, its history digest), no other, in one request.
    mine = [pid for pid, p in after.items() if p["external_id"] == changed["id"]]
    assert env.embeddings.inputs == len(mine) == after[mine[0]]["chunks"] and env.embeddings.requests == 1
    assert "Login fails when the password has unicode characters" in env.embeddings.input_log[0]
    gone = set(before_points) - set(after)
    assert {before_points[g]["external_id"] for g in gone} == {doomed["id"]}
    updated = [
        pid
        for pid in after
        if pid in before_points and after[pid]["content_hash"] != before_points[pid]["content_hash"]
    ]
    assert sorted(updated) == sorted(mine)
    assert after[updated[0]]["summary"] == "Login fails when the password has unicode characters"
    vec = meta(result, "vectors__issues_vectors")
    assert vec["rows_changed"].value == 1 and vec["points_deleted"].value == len(gone)
    table = meta(result, "tables__issues_table")
    assert table["deleted"].value == 1 and table["updated"].value == 1
    assert watermark(env) > first_watermark
    assert table["watermark"].value == watermark(env).isoformat()
    raw = meta(result, RAW)
    assert raw["fetch"].value == "incremental+ids"
    assert raw["records"].value < len(site.issues), "an incremental sync asks only for what changed"


COUNT = "/rest/api/3/search/approximate-count"


def search_requests(site) -> int:
    return sum(1 for method, path in site.requests if path.endswith("/rest/api/3/search/jql"))


def test_a_deleted_issue_leaves_table_and_search_within_one_incremental_sync(env):
    site = env.tenants["1"].site
    assert env.materialize("1").success
    doomed = short_issue(site)
    site.delete_issue(doomed["key"])
    result = env.materialize("1")  # the ordinary sync: incremental, no reconcile asked, not the 12th
    assert result.success
    assert doomed["id"] not in {r["external_id"] for r in table_rows(env, ISSUES, "1")}
    assert doomed["id"] in {r["external_id"] for r in table_rows(env, ISSUES, "1", live=False)}
    assert doomed["id"] not in {p.payload["external_id"] for p in issue_points(env)}
    raw = meta(result, RAW)
    assert raw["fetch"].value == "incremental+ids"
    live = len(site.issues)
    assert raw["live_estimate"].value == live
    assert raw["reconcile_reason"].value == f"estimate {live} < {live + 1} live rows"
    assert meta(result, "tables__issues_table")["deleted"].value == 1
    assert meta(result, "vectors__issues_vectors")["points_deleted"].value >= 1


def test_an_incremental_sync_without_deletions_does_not_list_ids(env):
    site = env.tenants["1"].site
    assert env.materialize("1").success
    site.touch_issue(short_issue(site)["key"], summary="Edited, nothing deleted")
    site.add_issue(site.projects[0]["key"], summary="Brand new, nothing deleted")
    before = search_requests(site)
    result = env.materialize("1", ISSUE_ASSETS)
    raw = meta(result, RAW)
    assert raw["fetch"].value == "incremental" and "reconcile_reason" not in raw and "ids_batch_id" not in raw
    # the new issue raised the live rows as much as the estimate: no trigger
    assert raw["live_estimate"].value == raw["live_rows_expected"].value == len(site.issues)
    assert search_requests(site) - before == 1, "one incremental search page, no id listing"
    assert meta(result, "tables__issues_table")["deleted"].value == 0


def test_an_estimate_lagging_a_new_issue_costs_one_listing_and_deletes_nothing(env):
    site = env.tenants["1"].site
    assert env.materialize("1").success
    new = site.add_issue(site.projects[0]["key"], summary="Created a moment ago")
    lagging = {"count": len(site.issues) - 1}  # the index has not counted the new issue yet
    env.tenants["1"].server.faults.append(Fault.respond(200, lagging, {"content-type": "application/json"}, path=COUNT))
    result = env.materialize("1", ISSUE_ASSETS)
    raw = meta(result, RAW)
    assert raw["fetch"].value == "incremental+ids"
    assert raw["reconcile_reason"].value == f"estimate {len(site.issues) - 1} < {len(site.issues)} live rows"
    assert meta(result, "tables__issues_table")["deleted"].value == 0
    assert new["id"] in {r["external_id"] for r in table_rows(env, ISSUES, "1")}


@pytest.mark.parametrize("status", [404, 403])
def test_a_site_without_the_approximate_count_still_syncs(env, status, caplog):
    site = env.tenants["1"].site
    server = env.tenants["1"].server
    assert env.materialize("1").success
    doomed = short_issue(site)
    site.delete_issue(doomed["key"])
    refusal = Fault.respond(status, {"errorMessages": ["No resource"]}, path=COUNT)
    server.faults.extend([refusal, refusal])
    with caplog.at_level("WARNING", logger="etl_assets.core.sources.jira.jql"):
        first = env.materialize("1", ISSUE_ASSETS)
        second = env.materialize("1", ISSUE_ASSETS)
    assert first.success and second.success and not server.faults
    for result in (first, second):
        raw = meta(result, RAW)
        assert raw["fetch"].value == "incremental" and "live_estimate" not in raw
    warned = [r for r in caplog.records if COUNT in r.getMessage()]
    assert len(warned) == 1 and f"HTTP {status}" in warned[0].getMessage()
    # without the estimate the deletion waits for the scheduled reconciliation, as before
    assert doomed["id"] in {r["external_id"] for r in table_rows(env, ISSUES, "1")}
    reconciled = env.materialize("1", ISSUE_ASSETS, run_config=raw_run_config(ISSUES, reconcile=True))
    assert meta(reconciled, RAW)["reconcile_reason"].value == "asked for (reconcile: true)"
    assert doomed["id"] not in {r["external_id"] for r in table_rows(env, ISSUES, "1")}


def test_rerun_without_jira_changes_sends_zero_embedding_requests(env):
    env.materialize("1")
    env.embeddings.reset_counters()
    result = env.materialize("1", ISSUE_ASSETS)
    assert env.embeddings.requests == 0
    assert meta(result, "vectors__issues_vectors")["rows_unchanged"].value == len(env.tenants["1"].site.issues)


def test_full_resync_is_one_config_flag(env):
    env.materialize("1")
    result = env.materialize("1", ISSUE_ASSETS, run_config={"ops": {RAW: {"config": {"full_resync": True}}}})
    assert meta(result, RAW)["fetch"].value == "full"
    assert meta(result, RAW)["records"].value == len(env.tenants["1"].site.issues)


def test_long_issue_is_chunked_and_surplus_chunks_leave_when_it_shrinks(env):
    site = env.tenants["1"].site
    env.materialize("1", chunk_tokens=200)
    long_key = site.long_issue_keys[0]
    long_id = site.issue(long_key)["id"]
    chunks = sorted(p.payload["chunk"] for p in issue_points(env) if p.payload["external_id"] == long_id)
    assert len(chunks) > 3 and chunks == list(range(len(chunks)))
    site.touch_issue(long_key, description="Now it is short.")
    env.materialize("1", ISSUE_ASSETS, chunk_tokens=200)
    remaining = [p.payload for p in issue_points(env) if p.payload["external_id"] == long_id]
    # One chunk for its text, one for its history digest when it has one (chunked apart).
    row = next(r for r in table_rows(env, ISSUES, "1") if r["external_id"] == long_id)
    parts = 2 if row["history"] else 1
    assert len(chunks) > parts + 2
    assert sorted(p["chunk"] for p in remaining) == list(range(parts))
    assert {p["chunks"] for p in remaining} == {parts}


def test_openai_chunks_respect_the_8192_token_input_limit(env):
    site = env.tenants["1"].site
    long_key = site.long_issue_keys[0]
    site.touch_issue(long_key, description=" ".join(f"word{i} lorem ipsum" for i in range(12_000)))
    assert env.materialize("1").success  # the fake refuses any input over 8192 cl100k tokens with a 400
    long_id = site.issue(long_key)["id"]
    assert len([p for p in issue_points(env) if p.payload["external_id"] == long_id]) >= 2


def test_issue_table_references_resolve(env):
    result = env.materialize("1")
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "references_resolve")
    assert check.passed
    assert all(v.value == 0 for k, v in check.metadata.items() if k.startswith("dangling_"))


# -- the search/jql client, over a real socket --------------------------------------------------


def paged_handler(pages: list[dict]):
    calls: list[dict] = []

    def handle(req: Request) -> Response:
        body = req.json()
        calls.append(body)
        index = int(body.get("nextPageToken") or 0)
        return Response.json(pages[index])

    return handle, calls


def issue(n: int) -> dict:
    return {"id": str(n), "key": f"P-{n}", "fields": {"summary": f"s{n}", "updated": "2026-01-01T00:00:00.000+0000"}}


@pytest.mark.parametrize(
    "pages",
    [
        # an empty last page that still carries a token and no isLast
        [
            {"issues": [issue(1), issue(2)], "nextPageToken": "1"},
            {"issues": [issue(3)], "nextPageToken": "2"},
            {"issues": [], "nextPageToken": "3"},
        ],
        # a page without nextPageToken ends the listing even without isLast
        [{"issues": [issue(1), issue(2)], "nextPageToken": "1"}, {"issues": [issue(3)]}],
        # the documented shape
        [
            {"issues": [issue(1)], "nextPageToken": "1", "isLast": False},
            {"issues": [issue(2), issue(3)], "isLast": True},
        ],
    ],
)
def test_search_jql_paging_ends_correctly(pages):
    handler, calls = paged_handler(pages)
    with LoopbackServer(handler) as server, httpx.Client(base_url=server.url, timeout=5) as http:
        client = JiraClient(http=http, tenant_id="t1", site=server.url)
        got = [i["id"] for page in search_pages(client, "project = P") for i in ISSUES.records(page.json())]
    assert got == ["1", "2", "3"]
    assert len(calls) == len(pages)
    assert [c.get("nextPageToken") for c in calls] == [None] + [str(i) for i in range(1, len(pages))]
    assert all(c["jql"] == "project = P" and "summary" in c["fields"] for c in calls)


def _tenant(url: str, jql: str | None = None) -> Tenant:
    return Tenant("acme", "Acme", {"jira": JiraSiteConfig(url=url, email_env="E", token_env="T", jql=jql)})


@pytest.mark.parametrize(("status", "needle"), [(410, "410 Gone"), (400, "refused the JQL")])
def test_search_errors_name_tenant_and_jql(status, needle):
    def handle(req: Request) -> Response:
        return Response.json({"errorMessages": ["nope"]}, status=200)

    with LoopbackServer(handle) as server, httpx.Client(base_url=server.url, timeout=5) as http:
        site = server.url
        server.faults.append(Fault.respond(status, {"errorMessages": ["Error in the JQL Query: bad"]}))
        client = JiraClient(http=http, tenant_id="acme", site=server.url)
        jql = 'project = "BAD" AND (labels = x)'
        with pytest.raises(JiraError) as err:
            list(search_pages(client, jql))
    message = str(err.value)
    assert "'acme'" in message and jql in message and needle in message and site in message


def test_bad_tenant_jql_fails_the_raw_asset_naming_tenant_and_jql(env):
    from etl_assets.core.tenants import TenantRegistry
    from etl_assets.defs.build import build_definitions

    t = env.tenants["1"]
    registry = TenantRegistry.from_mapping(
        {
            "tenants": [
                {
                    "id": "1",
                    "jira": {
                        "url": t.url,
                        "email_env": "T1_JIRA_EMAIL",
                        "token_env": "T1_JIRA_TOKEN",
                        "jql": "summary ~~ broken",
                    },
                }
            ]
        }
    )
    defs = build_definitions(registry=registry, resources=env.resources(), env={})
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        partition_key="1", raise_on_error=False, asset_selection=[dg.AssetKey(["jira", "raw", "raw_jira_issues"])]
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    message = failure.step_failure_data.error.to_string()
    assert "tenant '1'" in message and "summary ~~ broken" in message
    assert t.token not in message
