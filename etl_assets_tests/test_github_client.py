"""The GitHub client, parsers, tenants-file schema and cross-source search, without Dagster."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine

from etl_assets.core.records import FetchRequest, RecordError
from etl_assets.core.sources.github import parsers
from etl_assets.core.sources.github.client import EtagCache, GitHubClient, GitHubNotFound
from etl_assets.core.sources.github.sample import generate_sample_org, sample_transport
from etl_assets.core.sources.github.specs import ISSUES, PULL_REQUESTS, REPOSITORIES
from etl_assets.core.store import ops
from etl_assets.core.tenants import TenantConfigError, TenantRegistry
from etl_assets.fakes.github_server import GitHubServer

TOKEN = "ghp_unit_SECRETVALUE"


def _tenant(url: str, **github: object):
    return TenantRegistry.from_mapping(
        {"tenants": [{"id": "t", "jira": {"url": "sample://x"}, "github": {"url": url, "org": "acme", **github}}]}
    ).get("t")


@pytest.fixture
def served():
    site = generate_sample_org("acme", n_items=45, n_comments=10)
    with GitHubServer(site, token=TOKEN, prefix="/api/v3") as gh:
        yield gh


def _client(gh: GitHubServer, tmp_path: Path, **kw: object) -> tuple[GitHubClient, httpx.Client]:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ops.create_schema(engine)
    http = httpx.Client(base_url=gh.api_url, headers={"Authorization": f"Bearer {TOKEN}"}, follow_redirects=True)
    return GitHubClient(http, "t", gh.api_url, cache=EtagCache(engine, "t"), secret=TOKEN, **kw), http  # type: ignore[arg-type]


def test_link_paging_reads_every_page_and_a_second_pass_is_all_304s(served, tmp_path):
    client, http = _client(served, tmp_path)
    with http:
        tenant = _tenant(served.api_url, token_env="X")
        req = FetchRequest(tenant, page_size=4)
        first = list(ISSUES.fetch(client, req))
        issues = [r for p in first for r in ISSUES.records(p.json())]
        assert len(issues) == sum(1 for i in served.site.items.values() if not i.is_pr)
        assert len(first) > len(served.site.repos), "several pages per repository"
        assert all("pull_request" not in i for i in issues), "pull requests are routed to their own entity"
        asked = served.handler.requests
        second = list(ISSUES.fetch(client, req))
        assert [p.body for p in second] == [p.body for p in first], "a 304 replays the stored body"
        assert {p.status for p in second} == {304}
        assert client.stats.not_modified == served.handler.requests - asked


def test_pull_requests_are_read_newest_first_until_older_than_since(served, tmp_path):
    client, http = _client(served, tmp_path)
    with http:
        tenant = _tenant(served.api_url, token_env="X")
        everything = [r for p in PULL_REQUESTS.fetch(client, FetchRequest(tenant, page_size=2)) for r in p.json()]
        newest = max(parsers.updated_at(r) for r in everything)
        before = served.handler.requests
        recent = list(PULL_REQUESTS.fetch(client, FetchRequest(tenant, since=newest, page_size=2)))
        # One page per repository (plus the org listing): the walk stops at the first older page.
        assert served.handler.requests - before == 1 + len(served.site.repos)
        assert any(parsers.updated_at(r) == newest for p in recent for r in p.json())


def test_a_missing_repository_is_not_found_and_the_listing_skips_it(served, tmp_path, caplog):
    client, http = _client(served, tmp_path)
    with http:
        with pytest.raises(GitHubNotFound, match="HTTP 404"):
            client.get("/repos/acme/nope")
        tenant = _tenant(served.api_url, token_env="X", org=None, repos=["acme/nope", "acme/auth-service"])
        pages = list(REPOSITORIES.fetch(client, FetchRequest(tenant)))
        assert [r["full_name"] for p in pages for r in REPOSITORIES.records(p.json())] == ["acme/auth-service"]
        assert "acme/nope is not found" in caplog.text


def test_sample_transport_serves_the_demo_org_in_process():
    site = generate_sample_org("demo")
    with httpx.Client(base_url="https://api.demo.github.sample", transport=sample_transport(site)) as http:
        client = GitHubClient(http, "t", "sample://demo")
        tenant = _tenant("sample://demo", org="demo")
        repos = [r for p in REPOSITORIES.fetch(client, FetchRequest(tenant)) for r in p.json()]
        assert len(repos) == len(site.repos)
        rows = [parsers.parse_repository(r) for r in repos]
        assert {r["full_name"] for r in rows} == {r.full_name for r in site.repos.values()}


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"id": 1, "number": 2, "title": "x", "state": "open"}, "repository"),
        ({"number": 2}, "'id'"),
        ({"id": 1, "number": 2, "repository_url": "https://h/repos/o/r", "state": "open"}, "'title' is missing"),
        (
            {"id": 1, "number": 2, "title": "t", "repository_url": "https://h/repos/o/r", "state": "open"},
            "'updated_at'",
        ),
    ],
)
def test_a_bad_issue_is_refused_with_a_reason_naming_it(record, reason):
    with pytest.raises(RecordError, match=reason):
        parsers.parse_issue(record)


def test_labels_milestones_and_repository_come_from_the_record():
    row = parsers.parse_issue(
        {
            "id": 9,
            "number": 3,
            "title": " Crash ",
            "state": "closed",
            "state_reason": "completed",
            "repository_url": "https://ghe.example.com/api/v3/repos/Acme/Web",
            "labels": [{"name": "bug"}, "ui"],
            "milestone": {"title": "v2"},
            "updated_at": "2025-01-02T03:04:05Z",
        }
    )
    assert (row["key"], row["title"], row["labels"], row["milestone"]) == ("Acme/Web#3", "Crash", ["bug", "ui"], "v2")


@pytest.mark.parametrize(
    ("github", "message"),
    [
        ("x", "'github' must be a mapping"),
        ({"org": "a"}, "github.token_env is required for a live GitHub"),
        ({"token_env": "T"}, "github needs an org or a list of repos"),
        ({"token_env": "T", "repos": ["no-slash"]}, "github.repos must be a list of 'owner/repo'"),
        ({"token_env": "ghp_abc-123", "org": "a"}, "github.token_env must be the NAME"),
        ({"token_env": "T", "org": "a", "url": "ftp://x"}, "github.url 'ftp://x' is not allowed"),
        ({"token_env": "T", "org": "a", "orgs": ["b"]}, "unknown key 'orgs' under github"),
    ],
)
def test_a_wrong_github_section_is_one_line_naming_file_and_line(tmp_path, github, message):
    import yaml

    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": [{"id": "a", "jira": {"url": "sample://x"}, "github": github}]}))
    with pytest.raises(TenantConfigError) as caught:
        TenantRegistry.load(path)
    text = str(caught.value)
    assert text.startswith(f"{path} line ") and message in text and "\n" not in text
    assert "ghp_abc-123" not in text


def test_the_token_comes_from_the_named_variable_and_its_absence_names_only_the_variable():
    github = _tenant("https://ghe.example.com/api/v3", token_env="ACME_GH").section("github")
    assert github is not None
    assert github.url == "https://ghe.example.com/api/v3"
    assert github.token("t", {"ACME_GH": TOKEN}) == TOKEN
    with pytest.raises(TenantConfigError, match="set environment variable ACME_GH"):
        github.token("t", {})


def test_search_across_sources_merges_hits_and_names_their_source(env):
    """The env tenants index a Jira site and a small sample GitHub org: one query finds both."""
    from etl_assets.core.embeddings.factory import EmbeddingSettings, open_embedder
    from etl_assets.core.search import search_sources
    from etl_assets.core.vectorstore import open_qdrant
    from etl_assets_tests.convergence import read_points

    assert env.materialize("1").success
    target = next(
        p for p in read_points(env, with_vectors=False)["client_1_github_issues"]["points"] if p.payload["chunk"] == 0
    )
    settings = EmbeddingSettings(
        provider="openai", api_key="sk-test-embeddings-secret", base_url=env.embeddings.url, dimensions=64
    )

    async def go(query: str, **kw: object):
        async with open_embedder(settings) as embedder, open_qdrant(None, None, env.qdrant_path) as client:
            return await search_sources(client, embedder, query, tenant_id="1", access=kw.pop("access", None), **kw)  # type: ignore[arg-type]

    hits = asyncio.run(go(target.payload["text"], k=5, mode="dense"))
    assert (hits[0].source, hits[0].entity, hits[0].key) == ("github", "github_issues", target.payload["key"])
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    mixed = asyncio.run(go("login fails", k=200))
    assert {h.source for h in mixed} == {"jira", "github"}
    assert [h.score for h in mixed] == sorted((h.score for h in mixed), reverse=True)
    only_jira = asyncio.run(go("login fails", sources=["jira"], k=20))
    assert only_jira and {h.source for h in only_jira} == {"jira"}
    assert all(h.payload.get("source") == "github" for h in mixed if h.source == "github")


def test_the_etag_cache_forgets_entries_unused_for_a_week_and_keeps_used_ones(served, tmp_path):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select, update

    from etl_assets.core.sources.github.tables import http_cache

    client, http = _client(served, tmp_path)
    assert client.cache is not None
    with http:
        client.get("/repos/acme/auth-service")
        client.get("/repos/acme/search-service")
        with client.cache.engine.begin() as conn:
            conn.execute(update(http_cache).values(stored_at=datetime.now(UTC) - timedelta(days=8)))
        client.get("/repos/acme/auth-service")  # a 304: the entry is used again
        assert client.stats.not_modified == 1
        assert client.cache.prune() == 1
        with client.cache.engine.connect() as conn:
            kept = [r.url for r in conn.execute(select(http_cache.c.url))]
        assert [u.rsplit("/", 1)[-1] for u in kept] == ["auth-service"]
        assert "SECRETVALUE" not in repr(client)
