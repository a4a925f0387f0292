"""The MCP server, driven by the SDK's own client over stdio and streamable HTTP.

Real protocol, real processes: two fake tenants are synced and indexed by the Dagster graph
(fake Jira sites and the fake OpenAI-compatible embeddings server on loopback), then
``python -m etl_assets.mcp_server`` serves them. The fake embeddings are a hash of the text,
so a chunk's own text is the one query whose best hit is known (score 1.0).

Each server process gets its own copy of the Qdrant local folder: local mode locks its folder,
and the module's servers run side by side.
"""

import asyncio
import contextlib
import dataclasses
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from etl_assets.core.edge_client import EdgeQdrantClient
from etl_assets.core.search import MAX_COMMENTS
from etl_assets.core.sources.jira.sample.site import stored_datetime
from etl_assets.core.tenants import TenantRegistry
from etl_assets.fakes.openai_server import FakeEmbeddings
from etl_assets_tests.conftest import Env, running_fakes
from etl_assets_tests.permission_oracle import oracle_principals

pytest.importorskip("mcp", reason="the MCP SDK (mcp>=2.3) is not installed")

import httpx2  # noqa: E402 - the SDK's HTTP client, installed with it
from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOKENS = {
    "TEST_MCP_TOKEN_ONE": "tok-one-0123456789abcdefghijklmn",
    "TEST_MCP_TOKEN_BOTH": "tok-both-0123456789abcdefghijklmn",
    "TEST_MCP_TOKEN_BURST": "tok-burst-0123456789abcdefghijklm",
    "TEST_MCP_TOKEN_TWO": "tok-two-0123456789abcdefghijklmno",
    "TEST_MCP_TOKEN_MEMBER": "tok-member-0123456789abcdefghijk",
    "TEST_MCP_TOKEN_GUEST": "tok-guest-0123456789abcdefghijkl",
}


def member_of_no_group(fx: Any) -> str:
    """The tenant-1 sample user the ``member`` client runs as: in no group, so they see little."""
    return min(u for u in fx.users if not any(u in g["members"] for g in fx.groups.values()))


RATE = 40
MAX_QUERY = 1000
TOOLS = {"search_issues", "search_all", "get_issue", "list_projects", "list_tenants"}
# What a clean shutdown must not print.
BAD_LINES = ("Traceback", "Event loop is closed", "Task exception was never retrieved", "ResourceWarning", "nclosed")


@dataclass
class Indexed:
    env: Env
    tmp: Path
    points: dict[str, list[dict[str, Any]]]  # collection -> payloads
    config: Path

    def server_env(self, qdrant: Path, embeddings_url: str | None = None) -> dict[str, str]:
        environ = {**self.env.process_env(), **TOKENS, "QDRANT_PATH": str(qdrant), "HF_HUB_OFFLINE": "1"}
        if embeddings_url:
            environ["OPENAI_BASE_URL"] = embeddings_url
        return environ

    def qdrant_copy(self, name: str) -> Path:
        """A copy of the store for one server. Edge preallocates its vector files (32 MiB each, all
        holes until written): a plain copy writes the holes out, 14 MB became 4.3 GB a copy and
        filled the disk, so the copy keeps them holes."""
        target = self.tmp / f"qdrant-{name}"
        subprocess.run(["cp", "-R", "--sparse=always", self.env.qdrant_path, str(target)], check=True)
        for lock in target.rglob("*.lock"):
            lock.unlink()
        return target


# Tenant 1's configured custom fields (the sample site has both).
CUSTOM_FIELDS = ["Root cause", "Story Points"]


@dataclass
class _EnvWithCustomFields(Env):
    """The shared fake environment, with tenant 1 syncing ``CUSTOM_FIELDS``."""

    def _mapping(self) -> dict[str, Any]:
        tenants = []
        for t in self.tenants.values():
            jira: dict[str, Any] = {
                "url": t.url,
                "email_env": f"T{t.id}_JIRA_EMAIL",
                "token_env": f"T{t.id}_JIRA_TOKEN",
            }
            if t.id == "1":
                jira["custom_fields"] = CUSTOM_FIELDS
            tenants.append({"id": t.id, "jira": jira, **t.github_entry})
        return {"tenants": tenants}

    @property
    def registry(self) -> TenantRegistry:
        return TenantRegistry.from_mapping(self._mapping(), source="test")

    def tenants_yaml(self) -> Path:
        path = self.tmp / "tenants.yaml"
        path.write_text(yaml.safe_dump(self._mapping()))
        return path


async def _payloads(path: str) -> dict[str, list[dict[str, Any]]]:
    """The payloads of the collections the tests look into, from the folder the graph wrote."""
    client = EdgeQdrantClient(path)
    try:
        points = {}
        for name in (
            "client_1_issues",
            "client_2_issues",
            "client_1_comments",
            "client_1_github_issues",
            "client_1_github_pull_requests",
        ):
            records, _ = await client.scroll(name, limit=10_000, with_payload=True)
            points[name] = [r.payload or {} for r in records]
        return points
    finally:
        await client.close()


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Indexed]:
    tmp = tmp_path_factory.mktemp("mcp")
    # Tenant 1 has 100 issues: the sample site's long discussion (120 comments) needs that many.
    with running_fakes(tmp, f"sqlite:///{tmp / 'etl.db'}", sizes=((4, 100), (3, 12))) as shared:
        env = _EnvWithCustomFields(**{f.name: getattr(shared, f.name) for f in dataclasses.fields(shared)})
        with pytest.MonkeyPatch.context() as mp:
            for name, value in env.environ.items():
                mp.setenv(name, value)
            for tenant in ("1", "2"):
                assert env.materialize(tenant).success
        points = asyncio.run(_payloads(env.qdrant_path))
        config = tmp / "mcp.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "http_clients": [
                        {
                            "name": "member",
                            "token_env": "TEST_MCP_TOKEN_MEMBER",
                            "principal": "mia",
                            "tenants": ["1"],
                            "jira_user": env.tenants["1"].site.permissions.users[
                                member_of_no_group(env.tenants["1"].site.permissions)
                            ]["emailAddress"],
                        },
                        {"name": "guest", "token_env": "TEST_MCP_TOKEN_GUEST", "principal": "guest", "tenants": ["1"]},
                        {
                            "name": "one",
                            "token_env": "TEST_MCP_TOKEN_ONE",
                            "principal": "alice",
                            "tenants": ["1"],
                            "unrestricted": True,
                        },
                        {
                            "name": "both",
                            "token_env": "TEST_MCP_TOKEN_BOTH",
                            "principal": "bob",
                            "tenants": ["*"],
                            "unrestricted": True,
                        },
                        {
                            "name": "burst",
                            "token_env": "TEST_MCP_TOKEN_BURST",
                            "principal": "eve",
                            "tenants": ["2"],
                            "unrestricted": True,
                        },
                        {
                            "name": "two",
                            "token_env": "TEST_MCP_TOKEN_TWO",
                            "principal": "carol",
                            "tenants": ["2"],
                            "unrestricted": True,
                        },
                    ],
                    "limits": {"requests_per_minute": RATE, "max_query_chars": MAX_QUERY, "max_results": 20},
                }
            )
        )
        yield Indexed(env, tmp, points, config)


# -- running servers -----------------------------------------------------------------------------------


@dataclass
class HttpServer:
    proc: subprocess.Popen[str]
    url: str
    stderr: Path

    def log(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def http_server(indexed: Indexed, name: str, *extra: str, embeddings_url: str | None = None) -> Iterator[HttpServer]:
    stderr = indexed.tmp / f"{name}.stderr"
    args = ["--transport", "http", "--port", "0", *(extra or ("--config", str(indexed.config)))]
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-X", "dev", "-m", "etl_assets.mcp_server", *args],
            cwd=ROOT,
            env=indexed.server_env(indexed.qdrant_copy(name), embeddings_url),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
    server = HttpServer(proc, "", stderr)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = re.search(r"listening on (http://\S+/mcp)", server.log())
            if found:
                server.url = found.group(1)
                break
            assert proc.poll() is None, f"server exited {proc.returncode}: {server.log()}"
            time.sleep(0.1)
        assert server.url, f"server did not start: {server.log()}"
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def http(indexed: Indexed) -> Iterator[HttpServer]:
    with http_server(indexed, "http") as server:
        yield server


@contextlib.asynccontextmanager
async def http_client(url: str, token: str | None) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as transport_client:
        async with Client(streamable_http_client(url, http_client=transport_client)) as client:
            yield client


def stdio_params(indexed: Indexed, name: str, *args: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-X", "dev", "-m", "etl_assets.mcp_server", *args],
        env=indexed.server_env(indexed.qdrant_copy(name)),
        cwd=str(ROOT),
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    return result.structured_content


def error_text(result: Any) -> str:
    """The tool error's sentence, without the SDK's "Error executing tool <name>: " prefix."""
    assert result.is_error, f"expected a tool error, got {result.structured_content}"
    text = " ".join(c.text for c in result.content)
    return re.sub(r"^Error executing tool \w+: ", "", text)


def _messages(exc: BaseException) -> str:
    """Every message in an exception and the groups and causes under it (the SDK's client raises groups)."""
    parts = [f"{type(exc).__name__}: {exc}"]
    for inner in getattr(exc, "exceptions", ()):
        parts.append(_messages(inner))
    if exc.__cause__ is not None:
        parts.append(_messages(exc.__cause__))
    return " | ".join(parts)


def exact_target(indexed: Indexed, tenant: str = "1") -> dict[str, Any]:
    """A single-chunk issue's payload: its text is the query that must rank it first."""
    payloads = indexed.points[f"client_{tenant}_issues"]
    return min((p for p in payloads if p.get("chunks") == 1), key=lambda p: len(p["text"]))


# -- stdio ------------------------------------------------------------------------------------------------


def test_stdio_lists_the_tools_and_answers_each(indexed: Indexed) -> None:
    target = exact_target(indexed)
    errlog = (indexed.tmp / "stdio-tools.stderr").open("w")

    async def go() -> dict[str, Any]:
        params = stdio_params(indexed, "stdio-tools", "--principal", "alice", "--tenant", "1", "--unrestricted")
        async with Client(stdio_client(params, errlog=errlog)) as client:
            tools = (await client.list_tools()).tools
            search = await client.call_tool("search_issues", {"query": target["text"], "limit": 5, "mode": "dense"})
            issue = await client.call_tool("get_issue", {"key": target["key"].lower()})
            projects = await client.call_tool("list_projects", {})
            tenants = await client.call_tool("list_tenants", {})
            other = await client.call_tool("list_projects", {"tenant": "2"})
            return {
                "tools": tools,
                "search": structured(search),
                "issue": structured(issue),
                "projects": structured(projects),
                "tenants": structured(tenants),
                "other": error_text(other),
            }

    try:
        out = run(go())
    finally:
        errlog.close()
    tools = {t.name: t for t in out["tools"]}
    assert set(tools) == TOOLS
    schema = tools["search_issues"].input_schema
    assert schema["required"] == ["query"]
    assert {"tenant", "project", "issue_type", "status_category", "assignee", "updated_after", "updated_before"} <= set(
        schema["properties"]
    )
    modes = json.dumps(schema["properties"]["mode"]) + json.dumps(schema.get("$defs", {}))
    assert all(mode in modes for mode in ("dense", "sparse", "hybrid"))
    assert all(t.annotations and t.annotations.read_only_hint for t in tools.values())

    hits = out["search"]["hits"]
    assert out["search"]["tenant"] == "1" and out["search"]["mode"] == "dense"
    assert hits[0]["key"] == target["key"] and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[0]["url"].endswith(f"/browse/{target['key']}") and hits[0]["passage"]
    assert len(hits) == len({h["key"] for h in hits}) <= 5

    issue = out["issue"]
    assert issue["key"] == target["key"] and issue["summary"] == target["summary"]
    assert issue["status"] == target["status"] and issue["project"] == target["project_key"]
    assert "comments" not in issue["not_synced"] and isinstance(issue["comments"], list)

    site = indexed.env.tenants["1"].site
    assert [p["key"] for p in out["projects"]["projects"]] == sorted(p["key"] for p in site.projects)
    assert sum(p["issues"] for p in out["projects"]["projects"]) == len(site.issues)
    assert [t["id"] for t in out["tenants"]["tenants"]] == ["1"]
    assert out["other"] == "tenant '2' unknown; known: 1"


def test_stdio_refuses_to_start_without_an_identity(indexed: Indexed) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "etl_assets.mcp_server"],
        cwd=ROOT,
        env=indexed.server_env(Path(indexed.env.qdrant_path)),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2 and "stdio needs an identity" in proc.stderr, proc.stderr


# -- HTTP ---------------------------------------------------------------------------------------------------


def test_http_tools_filters_and_tenant_sets(indexed: Indexed, http: HttpServer) -> None:
    target = exact_target(indexed)
    payloads = indexed.points["client_1_issues"]
    project = target["project_key"]
    issue_type = target["type"]
    times = sorted(p["updated"] for p in payloads)
    middle = times[len(times) // 2]

    async def go() -> dict[str, Any]:
        async with http_client(http.url, TOKENS["TEST_MCP_TOKEN_BOTH"]) as client:
            names = {t.name for t in (await client.list_tools()).tools}

            async def hits(**args: Any) -> list[dict[str, Any]]:
                result = await client.call_tool("search_issues", {"query": "anything", "limit": 20, **args})
                return structured(result)["hits"]

            first = await client.call_tool("get_issue", {"key": target["key"], "tenant": "1"})
            assignee = structured(first)["assignee"]
            out = {
                "names": names,
                "exact": await hits(query=target["text"], tenant="1", limit=3),
                "all": await hits(tenant="1"),
                "project": await hits(tenant="1", project=project),
                "type": await hits(tenant="1", issue_type=issue_type),
                "done": await hits(tenant="1", status_category="done"),
                "after": await hits(tenant="1", updated_after=middle),
                "before": await hits(tenant="1", updated_before=middle),
                "assignee": await hits(tenant="1", assignee=assignee) if assignee else None,
                "points": await hits(tenant="1", custom_fields=["Story Points>=5"]),
                "unknown_field": error_text(
                    await client.call_tool(
                        "search_issues", {"query": "x", "tenant": "1", "custom_fields": ["Team=Falcon"]}
                    )
                ),
                "bad_filter": error_text(
                    await client.call_tool("search_issues", {"query": "x", "tenant": "1", "custom_fields": ["Team"]})
                ),
                "assignee_name": assignee,
                "no_tenant": error_text(await client.call_tool("search_issues", {"query": "x"})),
                "tenants": structured(await client.call_tool("list_tenants", {}))["tenants"],
                "projects_2": structured(await client.call_tool("list_projects", {"tenant": "2"})),
            }
            out["assignee_rows"] = [
                structured(await client.call_tool("get_issue", {"key": h["key"], "tenant": "1"}))["assignee"]
                for h in (out["assignee"] or [])[:5]
            ]
            return out

    out = run(go())
    assert out["names"] == TOOLS
    assert out["exact"][0]["key"] == target["key"] and out["exact"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert out["project"] and {h["project"] for h in out["project"]} == {project}
    assert out["type"] and {h["issue_type"] for h in out["type"]} == {issue_type}
    assert out["done"] and {h["status_category"] for h in out["done"]} == {"done"}
    assert out["after"] and all(h["updated"] >= middle for h in out["after"])
    assert out["before"] and all(h["updated"] < middle for h in out["before"])
    # Without filters the same query mixes projects, types and categories: the filters did the narrowing.
    unfiltered = out["all"]
    assert len(unfiltered) == 20 and len(out["project"]) < 20
    assert len({h["project"] for h in unfiltered}) > 1 and len({h["status_category"] for h in unfiltered}) > 1
    if out["assignee_name"]:
        assert out["assignee"] and set(out["assignee_rows"]) == {out["assignee_name"]}
    # Custom fields by name (tenant 1 lists "Story Points" and "Root cause"): only issues with 5 or more points.
    big = {
        p["key"] for p in payloads if isinstance(p.get("cf_story_points"), int | float) and p["cf_story_points"] >= 5
    }
    assert out["points"] and {h["key"] for h in out["points"]} <= big
    assert any(p.get("cf_story_points") is not None and p["key"] not in big for p in payloads)  # the filter narrowed
    assert out["unknown_field"].startswith("cannot filter on custom field 'Team': client_1_issues has no payload index")
    assert "(filterable: Story Points)" in out["unknown_field"] and "\n" not in out["unknown_field"]
    assert "is not NAME=VALUE" in out["bad_filter"]
    assert out["no_tenant"] == "name a tenant: this principal may use 1, 2"
    assert [t["id"] for t in out["tenants"]] == ["1", "2"]
    assert out["projects_2"]["tenant"] == "2" and out["projects_2"]["projects"]


def _site_comments(issue: dict[str, Any]) -> list[dict[str, Any]]:
    return list((issue["fields"].get("comment") or {}).get("comments") or [])


def _utc(stamp: str) -> datetime:
    return stored_datetime(stamp).astimezone(UTC)


def test_http_get_issue_reads_comments_history_links_and_custom_fields_from_the_tables(
    indexed: Indexed, http: HttpServer
) -> None:
    site = indexed.env.tenants["1"].site
    long = max(site.issues, key=lambda i: len(_site_comments(i)))
    restricted = next(i for i in site.issues if any("visibility" in c for c in _site_comments(i)))
    former = next(i for i in site.issues if any("accountId" not in c["author"] for c in _site_comments(i)))
    linked = next(i for i in site.issues if i["fields"].get("issuelinks"))
    moved = next(i for i in site.issues if i["fields"]["status"]["statusCategory"]["key"] != "new")
    cause, cause_keys = next(iter(site.custom_facts.items()))
    wanted = {"long": long["key"], "restricted": restricted["key"], "former": former["key"]}
    wanted |= {"linked": linked["key"], "moved": moved["key"], "cause": cause_keys[0]}

    async def go() -> dict[str, dict[str, Any]]:
        async with http_client(http.url, TOKENS["TEST_MCP_TOKEN_ONE"]) as client:
            return {name: structured(await client.call_tool("get_issue", {"key": key})) for name, key in wanted.items()}

    out = run(go())

    # The long discussion: the newest MAX_COMMENTS, oldest first, and a count of the rest.
    thread = sorted(_site_comments(long), key=lambda c: _utc(c["created"]))
    assert len(thread) > MAX_COMMENTS
    got = out["long"]
    assert len(got["comments"]) == MAX_COMMENTS and got["comments_older"] == len(thread) - MAX_COMMENTS
    assert got["comments_restricted"] == 0 and got["comments_incomplete"] is None
    newest = thread[-MAX_COMMENTS:]
    assert [datetime.fromisoformat(c["created"]) for c in got["comments"]] == [_utc(c["created"]) for c in newest]
    assert [c["author"] for c in got["comments"]] == [c["author"]["displayName"] for c in newest]
    assert all(c["body"] for c in got["comments"])

    # This client is an operator's (unrestricted): restricted comments are shown to it too.
    got = out["restricted"]
    assert got["comments_restricted"] == 0 and len(got["comments"]) == len(_site_comments(restricted))

    # A comment whose author's account was deleted is kept, under the name Jira shows.
    former_thread = sorted(_site_comments(former), key=lambda c: _utc(c["created"]))
    assert [c["author"] for c in out["former"]["comments"]] == [c["author"]["displayName"] for c in former_thread]

    # Jira issue links, both directions, with the linked issue's summary.
    ends = [link.get("outwardIssue") or link.get("inwardIssue") for link in linked["fields"]["issuelinks"]]
    links = {link["key"]: link for link in out["linked"]["links"]}
    assert {e["key"] for e in ends} <= set(links)
    assert all(links[e["key"]]["summary"] == e["fields"]["summary"] for e in ends)
    assert all(links[e["key"]]["relation"] not in ("parent", "child") for e in ends)

    assert "In Progress" in (out["moved"]["history"] or "")
    assert out["cause"]["custom_fields"].get("Root cause") == cause


def test_http_search_issues_names_the_comment_that_matched(indexed: Indexed, http: HttpServer) -> None:
    # A fact said only in one comment (the sample site plants them), searched by its exact words.
    site = indexed.env.tenants["1"].site
    fact, keys = next((f, k) for f, k in site.comment_facts.items() if len(k) == 1)
    comment = next(p for p in indexed.points["client_1_comments"] if fact in " ".join(p["text"].split()))

    async def go() -> tuple[Any, dict[str, Any]]:
        async with http_client(http.url, TOKENS["TEST_MCP_TOKEN_ONE"]) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            args = {"query": fact, "mode": "sparse", "limit": 5}
            return tools["search_issues"], structured(await client.call_tool("search_issues", args))

    tool, result = run(go())
    assert "comment_author" in (tool.description or "") and "comment_created" in (tool.description or "")
    top = result["hits"][0]
    assert top["key"] == keys[0] == comment["key"]
    assert (top["comment_author"], top["comment_created"]) == (comment["author"], comment["created"])
    assert top["comment_author"] and top["comment_created"]
    assert fact[:40] in top["passage"]


def test_http_search_all_spans_sources_and_filters_them(indexed: Indexed, http: HttpServer) -> None:
    gh = indexed.points["client_1_github_issues"][0]
    jira = exact_target(indexed)

    async def go() -> dict[str, Any]:
        async with http_client(http.url, TOKENS["TEST_MCP_TOKEN_ONE"]) as client:

            async def call(**args: Any) -> Any:
                return await client.call_tool("search_all", {"limit": 10, **args})

            return {
                "gh_all": structured(await call(query=gh["title"], mode="sparse")),
                "mixed": structured(await call(query="anything", mode="dense", limit=20)),
                "jira_only": structured(await call(query="anything", mode="dense", sources=["jira"])),
                "jira_all": structured(await call(query=jira["text"], mode="dense")),
                "gh_only": structured(await call(query="anything", mode="dense", sources=["github"])),
                "other": error_text(await call(query="x", tenant="2")),
                "long": error_text(await call(query="x" * (MAX_QUERY + 1))),
                "limit": error_text(await call(query="x", limit=21)),
                "bad_source": (await call(query="x", sources=["gitlab"])).is_error,
            }

    out = run(go())
    top = out["gh_all"]["hits"][0]
    assert (top["source"], top["key"], top["title"]) == ("github", gh["key"], gh["title"])
    assert top["url"] == gh["url"] and top["passage"]
    # Unfiltered, the same query mixes the sources: the filter did the narrowing.
    assert {h["source"] for h in out["mixed"]["hits"]} == {"jira", "github"}
    assert out["jira_only"]["hits"] and {h["source"] for h in out["jira_only"]["hits"]} == {"jira"}
    top = out["jira_all"]["hits"][0]
    assert (top["source"], top["key"], top["kind"]) == ("jira", jira["key"], "issue")
    assert top["url"].endswith(f"/browse/{jira['key']}") and top["state"] == jira["status"]
    assert out["gh_only"]["hits"] and {h["source"] for h in out["gh_only"]["hits"]} == {"github"}
    assert out["other"] == "tenant '2' unknown; known: 1"
    assert out["long"] == f"query is {MAX_QUERY + 1} characters long; at most {MAX_QUERY} are accepted: shorten it"
    assert out["limit"] == "limit must be between 1 and 20, got 21"
    assert out["bad_source"]


def test_http_scopes_each_token_to_its_tenants(indexed: Indexed, http: HttpServer) -> None:
    keys_2 = {i["key"] for i in indexed.env.tenants["2"].site.issues}
    only_in_1 = next(i["key"] for i in indexed.env.tenants["1"].site.issues if i["key"] not in keys_2)

    async def go() -> tuple[list[str], str, str, dict[str, Any]]:
        async with http_client(http.url, TOKENS["TEST_MCP_TOKEN_TWO"]) as client:
            tenants = structured(await client.call_tool("list_tenants", {}))["tenants"]
            search = await client.call_tool("search_issues", {"query": "login", "tenant": "1"})
            issue = await client.call_tool("get_issue", {"key": only_in_1})
        async with http_client(http.url, TOKENS["TEST_MCP_TOKEN_BOTH"]) as both:
            found = structured(await both.call_tool("get_issue", {"key": only_in_1}))
        return [t["id"] for t in tenants], error_text(search), error_text(issue), found

    tenants, search, issue, found = run(go())
    assert tenants == ["2"]
    assert search == "tenant '1' unknown; known: 2"
    assert issue == f"issue {only_in_1!r} not found in tenant 2 (or deleted at the source)"
    assert found["tenant"] == "1" and found["key"] == only_in_1, "a principal with both tenants finds it in 1"


def test_http_refuses_unknown_and_missing_tokens_with_401(http: HttpServer) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    wrong = httpx.post(http.url, json=body, headers={**headers, "Authorization": "Bearer not-a-token"}, timeout=10)
    missing = httpx.post(http.url, json=body, headers=headers, timeout=10)
    assert wrong.status_code == 401 and missing.status_code == 401
    assert "not-a-token" not in wrong.text and all(t not in wrong.text for t in TOKENS.values())

    async def go() -> None:
        async with http_client(http.url, "tok-wrong-0123456789abcdefghijk") as client:
            await client.list_tools()

    with pytest.raises(BaseException) as refused:
        run(go())
    # The SDK's client reports the refused handshake as an MCPError (the 401 itself is checked above).
    assert "MCPError" in _messages(refused.value), _messages(refused.value)


def test_http_refuses_an_over_long_query_and_a_limit_over_the_cap(http: HttpServer) -> None:
    async def go() -> tuple[str, str, str]:
        async with http_client(http.url, TOKENS["TEST_MCP_TOKEN_ONE"]) as client:
            long = await client.call_tool("search_issues", {"query": "x" * (MAX_QUERY + 1)})
            limit = await client.call_tool("search_issues", {"query": "x", "limit": 21})
            date = await client.call_tool("search_issues", {"query": "x", "updated_after": "last tuesday"})
            return error_text(long), error_text(limit), error_text(date)

    long, limit, date = run(go())
    assert long == f"query is {MAX_QUERY + 1} characters long; at most {MAX_QUERY} are accepted: shorten it"
    assert limit == "limit must be between 1 and 20, got 21"
    assert "ISO 8601" in date
    assert "Traceback" not in long + limit + date


def test_http_rate_limit_is_per_token(http: HttpServer) -> None:
    async def go() -> tuple[list[bool], bool]:
        async with http_client(http.url, TOKENS["TEST_MCP_TOKEN_BURST"]) as burst:
            errors = [(await burst.call_tool("list_tenants", {})).is_error for _ in range(RATE + 1)]
        async with http_client(http.url, TOKENS["TEST_MCP_TOKEN_ONE"]) as other:
            other_ok = not (await other.call_tool("list_tenants", {})).is_error
        return errors, other_ok

    errors, other_ok = run(go())
    assert errors == [False] * RATE + [True]
    assert other_ok, "another token has its own budget"


def test_http_without_auth_binds_loopback_only(indexed: Indexed) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "etl_assets.mcp_server", "--transport", "http", "--no-auth", "--host", "0.0.0.0"]
        + ["--principal", "me", "--tenant", "1", "--unrestricted"],
        cwd=ROOT,
        env=indexed.server_env(Path(indexed.env.qdrant_path)),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2 and "loopback addresses only" in proc.stderr, proc.stderr
    without_clients = subprocess.run(
        [sys.executable, "-m", "etl_assets.mcp_server", "--transport", "http"],
        cwd=ROOT,
        env=indexed.server_env(Path(indexed.env.qdrant_path)),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert without_clients.returncode == 2 and "--no-auth" in without_clients.stderr


# -- shutdown ----------------------------------------------------------------------------------------------


def _wait_closed(fake: FakeEmbeddings, timeout_s: float = 5.0) -> int:
    deadline = time.monotonic() + timeout_s
    while fake.server.connections_active and time.monotonic() < deadline:
        time.sleep(0.05)
    return fake.server.connections_active


def test_http_sigterm_closes_everything_in_the_servers_loop(indexed: Indexed) -> None:
    target = exact_target(indexed)
    outcome: dict[str, Any] = {}
    with FakeEmbeddings(dimensions=1536) as fake:
        with http_server(indexed, "http-sigterm", embeddings_url=fake.url) as server:

            async def go() -> None:
                async with http_client(server.url, TOKENS["TEST_MCP_TOKEN_ONE"]) as client:
                    result = await client.call_tool("search_issues", {"query": target["text"]})
                    outcome["hits"] = structured(result)["hits"]
                    outcome["open_during"] = fake.server.connections_active
                    # SIGTERM while this client's session (and its connection) is open.
                    server.proc.send_signal(signal.SIGTERM)
                    outcome["returncode"] = await asyncio.to_thread(server.proc.wait, 20)

            # The client's own teardown may fail once its server is gone; what matters is the server.
            with contextlib.suppress(Exception):
                run(go())
            log = server.log()
        assert outcome.get("hits") and outcome["hits"][0]["key"] == target["key"], (outcome, log)
        assert outcome["open_during"] >= 1, "the embedder held no connection, so its closing proves nothing"
        assert outcome["returncode"] == 0, log
        assert "search service closed" in log
        assert not [line for line in log.splitlines() if any(bad in line for bad in BAD_LINES)], log
        assert _wait_closed(fake) == 0, "a connection to the embeddings server outlived the server"


def test_stdio_sigterm_closes_everything_in_the_servers_loop(indexed: Indexed) -> None:
    import psutil

    target = exact_target(indexed)
    stderr = indexed.tmp / "stdio-sigterm.stderr"
    with FakeEmbeddings(dimensions=1536) as fake:
        params = stdio_params(indexed, "stdio-sigterm", "--principal", "alice", "--tenant", "1", "--unrestricted")
        params.env = {**(params.env or {}), "OPENAI_BASE_URL": fake.url}
        outcome: dict[str, Any] = {}

        async def go() -> None:
            with stderr.open("w") as errlog:
                async with Client(stdio_client(params, errlog=errlog)) as client:
                    result = await client.call_tool("search_issues", {"query": target["text"]})
                    outcome["hits"] = structured(result)["hits"]
                    outcome["open_during"] = fake.server.connections_active
                    # This client's server: the module's HTTP server is a child of this process too.
                    children = [
                        p
                        for p in psutil.Process().children(recursive=True)
                        if "etl_assets.mcp_server" in (cmd := " ".join(p.cmdline())) and "--transport" not in cmd
                    ]
                    outcome["servers"] = len(children)
                    children[0].send_signal(signal.SIGTERM)
                    outcome["returncode"] = await asyncio.to_thread(children[0].wait, 20)

        # The client's own teardown may fail once its server is gone; what matters is the server.
        with contextlib.suppress(Exception):
            run(go())
        assert outcome.get("servers") == 1, outcome
        assert outcome.get("hits") and outcome["hits"][0]["key"] == target["key"], outcome
        assert outcome["open_during"] >= 1
        log = stderr.read_text()
        # psutil reports None when the SDK's client reaped its child first: then the log is the proof.
        assert outcome["returncode"] in (0, None), log
        assert "stopping on a signal" in log, "the server stopped for another reason than the SIGTERM"
        assert log.strip().splitlines()[-1].endswith("search service closed"), log
        assert not [line for line in log.splitlines() if any(bad in line for bad in BAD_LINES)], log
        assert _wait_closed(fake) == 0


# -- the search API on a Qdrant server -------------------------------------------------------------------


def test_service_creates_the_payload_indexes_its_filters_need_on_a_server(tmp_path: Path) -> None:
    from qdrant_client import AsyncQdrantClient, models

    from etl_assets.core.search import FILTERED_FIELDS, SearchService
    from etl_assets.fakes.qdrant_server import FakeQdrant

    async def go(url: str) -> list[str]:
        client = AsyncQdrantClient(url=url)
        try:
            await client.create_collection(
                "client_1_issues", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE)
            )
            # Only what the vector store needs to run the service's filters; no embedder or tables used.
            service = SearchService(client, embedder=None, engine=None, registry=None, server_mode=True)  # type: ignore[arg-type]
            return await service.ensure_payload_indexes("client_1_issues")
        finally:
            await client.close()

    with FakeQdrant(tmp_path / "qdrant-server") as qdrant:
        created = run(go(qdrant.url))
        index_requests = [path for method, path, *_ in qdrant.log if method == "PUT" and path.endswith("/index")]
    assert created == list(FILTERED_FIELDS)
    assert index_requests == ["/collections/client_1_issues/index"] * len(FILTERED_FIELDS)


def test_http_failures_and_timeouts_reach_the_caller_as_sentences_without_secrets(indexed: Indexed) -> None:
    from etl_assets.fakes.loopback import Fault

    key = indexed.env.process_env()["OPENAI_API_KEY"]
    config = indexed.tmp / "mcp-timeout.yaml"
    clients = [
        {"name": "one", "token_env": "TEST_MCP_TOKEN_ONE", "principal": "alice", "tenants": ["1"], "unrestricted": True}
    ]
    config.write_text(yaml.safe_dump({"http_clients": clients, "limits": {"timeout_s": 2}}))
    with FakeEmbeddings(dimensions=1536) as fake:
        with http_server(indexed, "http-failures", "--config", str(config), embeddings_url=fake.url) as server:

            async def go() -> tuple[str, str]:
                async with http_client(server.url, TOKENS["TEST_MCP_TOKEN_ONE"]) as client:
                    # A first search opens the store and the embeddings client: on a busy machine that
                    # alone can outlast the timeout, so it is done before the faults are queued.
                    warm = await client.call_tool("search_issues", {"query": "warm up"})
                    assert not warm.is_error, warm.content
                    # A gateway that echoes the key in its refusal, as some do; and one slower than the timeout.
                    fake.server.faults.append(
                        Fault.respond(
                            401, {"error": {"message": f"Incorrect API key provided: {key}", "code": "invalid_api_key"}}
                        )
                    )
                    fake.server.faults.append(Fault.delay(10))
                    refused = await client.call_tool("search_issues", {"query": "failing gateway"})
                    slow = await client.call_tool("search_issues", {"query": "slow gateway"})
                    return error_text(refused), error_text(slow)

            refused, slow = run(go())
            log = server.log()
    assert re.fullmatch(
        r"search_issues failed on the server \(incident [0-9a-f]{8}\); retry later, or ask an operator", refused
    ), refused
    assert slow == "search_issues took longer than 2 s and was stopped; retry, or narrow the request"
    incident = re.search(r"incident ([0-9a-f]{8})", refused).group(1)  # type: ignore[union-attr]
    assert f"[incident {incident}]" in log, "the operator finds the incident in the server log"
    assert key not in log and key not in refused and "Traceback" not in log


# -- the Python search API, in process, on each database ----------------------------------------------------


def test_search_api_answers_from_the_committed_tables_on_each_database(env: Env) -> None:
    from etl_assets.core.edge_client import EdgeQdrantClient
    from etl_assets.core.embeddings.factory import EmbeddingSettings, open_embedder
    from etl_assets.core.search import (
        InvalidRequestError,
        IssueFilters,
        NotFoundError,
        Principal,
        SearchService,
        UnknownTenantError,
    )
    from etl_assets.core.store.db import make_engine

    assert env.materialize("1").success
    site = env.tenants["1"].site
    child = next(i for i in site.issues if (i["fields"].get("parent") or {}).get("key"))
    parent_key = child["fields"]["parent"]["key"]
    me = Principal("alice", frozenset({"1"}), unrestricted=True)
    settings = EmbeddingSettings(
        provider="openai", api_key="sk-test-embeddings-secret", base_url=env.embeddings.url, dimensions=64
    )

    async def go() -> dict[str, Any]:
        engine = make_engine(env.database_url, create=False)
        client = EdgeQdrantClient(env.qdrant_path)  # the folder the graph wrote (QDRANT_ENGINE's default)
        try:
            async with open_embedder(settings) as embedder:
                service = SearchService(client, embedder, engine, env.registry)
                out: dict[str, Any] = {
                    "child": await service.get_issue(me, child["key"]),
                    "parent": await service.get_issue(me, parent_key, tenant="1"),
                    "projects": await service.list_projects(me),
                    "tenants": service.list_tenants(me),
                    "done": await service.search_issues(
                        me, "anything", filters=IssueFilters(status_category="done"), limit=50
                    ),
                }
                for name, call in {
                    "missing": service.get_issue(me, "NOPE-1"),
                    "other": service.list_projects(me, tenant="2"),
                    "empty": service.search_issues(me, "  "),
                }.items():
                    try:
                        await call
                    except (NotFoundError, UnknownTenantError, InvalidRequestError) as exc:
                        out[name] = str(exc)
                return out
        finally:
            await client.close()
            engine.dispose()

    out = run(go())
    assert out["child"].summary == child["fields"]["summary"]
    assert [(link.key, link.relation) for link in out["child"].links][0] == (parent_key, "parent")
    # The parent lists it: as a sub-task (the row's links), or as a child (found by its parent_key).
    assert child["key"] in [link.key for link in out["parent"].links if link.relation in ("sub-task", "child")]
    assert sum(p.issues for p in out["projects"]) == len(site.issues)
    assert [t.id for t in out["tenants"]] == ["1"]
    assert out["done"].hits and {h.status_category for h in out["done"].hits} == {"done"}
    assert out["missing"] == "issue 'NOPE-1' not found in tenant 1 (or deleted at the source)"
    assert out["other"] == "tenant '2' unknown; known: 1"
    assert out["empty"] == "query is empty: describe what you are looking for in words"


def test_http_answers_as_each_clients_jira_user(indexed: Indexed, http: HttpServer) -> None:
    """A client configured with a Jira user sees what that user may open; one without, only what
    Jira shows anyone; the filter is Qdrant's, and a hidden issue is answered as not found."""
    fx = indexed.env.tenants["1"].site.permissions
    member = member_of_no_group(fx)
    theirs = oracle_principals(fx, member)
    issues = indexed.points["client_1_issues"]
    hidden = sorted(p["key"] for p in issues if p["chunk"] == 0 and theirs.isdisjoint(p["access"]))
    shown = sorted(p["key"] for p in issues if p["chunk"] == 0 and not theirs.isdisjoint(p["access"]))
    public = {p["key"] for p in issues if "public" in p["access"]}
    assert hidden and shown, "the member sees some issues and not others"
    target = next(p for p in issues if p["key"] == hidden[0] and p["chunk"] == 0)
    allowed_comments = [c for c in indexed.points["client_1_comments"] if not theirs.isdisjoint(c["access"])]

    async def go() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with http_client(http.url, TOKENS["TEST_MCP_TOKEN_MEMBER"]) as client:
            out["by_key"] = structured(await client.call_tool("search_issues", {"query": target["key"], "limit": 20}))
            out["by_text"] = structured(await client.call_tool("search_issues", {"query": target["text"], "limit": 20}))
            out["get_hidden"] = error_text(await client.call_tool("get_issue", {"key": target["key"]}))
            out["get_shown"] = structured(await client.call_tool("get_issue", {"key": shown[0]}))
            out["all"] = structured(await client.call_tool("search_all", {"query": target["text"], "limit": 20}))
        async with http_client(http.url, TOKENS["TEST_MCP_TOKEN_GUEST"]) as guest:
            out["guest"] = structured(await guest.call_tool("search_issues", {"query": target["text"], "limit": 20}))
        return out

    out = run(go())
    keys = {h["key"] for h in out["by_key"]["hits"]} | {h["key"] for h in out["by_text"]["hits"]}
    assert target["key"] not in keys and keys <= set(shown), keys - set(shown)
    assert f"no issue {target['key']} in tenant 1" in (out["by_key"]["notice"] or "")
    assert "not found" in out["get_hidden"] and target["text"][:40] not in out["get_hidden"]
    assert out["get_shown"]["key"] == shown[0]
    visible_bodies = {c["comment_id"] for c in allowed_comments if c["key"] == shown[0]}
    assert len(out["get_shown"]["comments"]) == len(visible_bodies)
    assert {h["key"] for h in out["all"]["hits"] if h["source"] == "jira"} <= set(shown)
    # GitHub: a public repository's rows are public; others are for operators only.
    public_github = {
        p["key"]
        for name in ("client_1_github_issues", "client_1_github_pull_requests")
        for p in indexed.points[name]
        if "public" in p["access"]
    }
    assert {h["key"] for h in out["all"]["hits"] if h["source"] == "github"} <= public_github
    assert {h["key"] for h in out["guest"]["hits"]} <= public
