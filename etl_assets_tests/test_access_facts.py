"""What access depends on reaches the committed tables, and the sample site is a permission testbed.

The issue sync asks for ``security`` and the site's user/group pickers (found in ``GET /field``),
the parser keeps them as ``access_facts`` (never in the embedded text), and
``permission_tables.issue_facts`` reads them back: access computed from the committed rows must
equal access computed from the site's own issue JSON, and both must agree with the independent
oracle (``permission_oracle``) for every user of the sample site.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from etl_assets.core.permissions import RESTRICTED, compute_access, issue_facts_from_json
from etl_assets.core.records import FetchRequest, RawPage
from etl_assets.core.sources.jira import custom_fields
from etl_assets.core.sources.jira.client import JiraClient
from etl_assets.core.sources.jira.parsers import ACCESS_FIELDS_KEY, parse_comment, parse_issue
from etl_assets.core.sources.jira.permission_tables import issue_facts, projects_for_permissions
from etl_assets.core.sources.jira.permissions import fetch_permissions
from etl_assets.core.sources.jira.sample import (
    build_sample_site,
    permission_fixture_for,
    sample_site_for,
    sample_transport,
)
from etl_assets.core.sources.jira.sample.permissions import GROUP_PICKER, USER_PICKER, site_permission_fixture
from etl_assets.core.sources.jira.source import JiraSiteConfig
from etl_assets.core.sources.jira.specs import COMMENTS, ISSUES, PROJECTS
from etl_assets.core.store import ops
from etl_assets.core.store.db import make_engine
from etl_assets.core.tenants import Tenant
from etl_assets_tests.corpus import load_corpus_json
from etl_assets_tests.permission_oracle import ANONYMOUS, mismatches, oracle_can_see, points

URL = "sample://facts?projects=8&issues=60"


def _tenant(site: Any, custom: tuple[str, ...] = ()) -> Tenant:
    return Tenant(
        "acme", "Acme", {"jira": JiraSiteConfig(url=site.base_url, email_env="E", token_env="T", custom_fields=custom)}
    )


def _fetch(site: Any, tenant: Tenant, transport: httpx.BaseTransport | None = None) -> list[RawPage]:
    with httpx.Client(base_url=site.base_url, transport=transport or sample_transport(site)) as http:
        return list(ISSUES.fetch(JiraClient(http, "acme", site.base_url), FetchRequest(tenant, page_size=100)))


def _rows(pages: list[RawPage]) -> list[dict[str, Any]]:
    assert ISSUES.page_records is not None
    return [ISSUES.parse(r) for p in pages for r in ISSUES.page_records(p.json(), p.params)]


def _sync(engine: Engine, site: Any, tenant: Tenant, transport: httpx.BaseTransport | None = None) -> None:
    """The projects and issues (with comments) tables of ``tenant``, as the table step commits them."""
    with httpx.Client(base_url=site.base_url, transport=transport or sample_transport(site)) as http:
        client = JiraClient(http, tenant.id, site.base_url)
        for spec in (PROJECTS, ISSUES):
            pages = list(spec.fetch(client, FetchRequest(tenant, page_size=100)))
            ops.land_raw(engine, spec, tenant.id, pages, kind="full")
            ops.build_table(engine, spec, tenant.id)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'facts.db'}")
    yield eng
    eng.dispose()


# -- the parser, on real shapes -------------------------------------------------------------------


def test_parser_keeps_security_people_and_pickers_of_a_real_cloud_issue() -> None:
    """airbyteio.atlassian.net (real v3): ``security`` asked for and null; a user-array field."""
    issue = load_corpus_json("airbyte-source-jira", "issues.json")["issues"][0]
    fields = issue["fields"]
    picker = next(k for k, v in fields.items() if k.startswith("customfield_") and isinstance(v, list) and v)
    row = parse_issue({**issue, ACCESS_FIELDS_KEY: {picker: "user"}})
    facts = row["access_facts"]
    assert facts["security_known"] is True and facts["security_level_id"] is None
    assert facts["project_id"] == fields["project"]["id"]
    assert facts["reporter"] == fields["reporter"]["accountId"]
    assert facts["pickers_known"] is True
    assert facts["pickers"] == {picker: {"kind": "user", "users": sorted(u["accountId"] for u in fields[picker])}}
    # the same issue without the security field and without the pickers asked for: unknown, not empty
    blind = parse_issue({**issue, "fields": {k: v for k, v in fields.items() if k != "security"}})["access_facts"]
    assert blind["security_known"] is False and blind["pickers_known"] is False and blind["pickers"] == {}
    # what access depends on is not in the text that is embedded
    assert ISSUES.text(row) == ISSUES.text({**row, "access_facts": None})


def test_parser_keeps_a_comments_visibility_as_jira_sends_it() -> None:
    """The spec's own example: a comment restricted to a role names it by name (``identifier``)."""
    example = load_corpus_json("atlassian-spec-examples", "issue_get.200.json")
    restricted = next(c for c in example["fields"]["comment"] if c.get("visibility"))
    row = parse_comment({**restricted, "id": "1"})
    assert row["access_facts"] == {
        "visibility": {"type": "role", "identifier": "Administrators", "value": "Administrators"}
    }
    assert parse_comment({"id": "2", "body": "hi"})["access_facts"] == {"visibility": None}


def test_pickers_are_found_by_their_schema_in_real_field_listings() -> None:
    zoo = load_corpus_json("public-jira-dataset", "jira_field_information.json")
    kinds = {"userpicker": "user", "multiuserpicker": "user", "grouppicker": "group", "multigrouppicker": "group"}
    for site, listing in zoo.items():
        expected = {
            f["id"]: kinds[str(f["schema"]["custom"]).rsplit(":", 1)[-1]]
            for f in listing
            if str((f.get("schema") or {}).get("custom", "")).rsplit(":", 1)[-1] in kinds
        }
        assert custom_fields.access_fields(listing) == expected, site
    apache = custom_fields.access_fields(zoo["Apache"])
    assert list(apache.values()).count("user") == 12 and list(apache.values()).count("group") == 1
    # date pickers and issue pickers are not people
    jfrog = {f["id"]: f for f in zoo["JFrog"]}
    assert not any(
        "issue-picker" in jfrog[fid]["schema"]["custom"] for fid in custom_fields.access_fields(zoo["JFrog"])
    )
    # a team-managed "people" field has no picker type, only its value type
    people = {"id": "customfield_1", "schema": {"type": "array", "items": "user", "customId": 1}}
    assert custom_fields.access_fields([people]) == {"customfield_1": "user"}


# -- the sample site as a permission testbed ------------------------------------------------------


def test_sample_urls_have_access_rules_unless_turned_off() -> None:
    site = build_sample_site(URL)
    fx = site.permissions
    assert fx is not None and site_permission_fixture(build_sample_site(URL + "&permissions=off")).issues
    assert [i["fields"]["security"] for i in build_sample_site(URL).issues] == [
        i["fields"]["security"] for i in site.issues
    ], "deterministic"
    assert {u: fx.users[u]["displayName"] for u in fx.users} == {u["accountId"]: u["displayName"] for u in site.users}
    assert {p["scheme"] for p in fx.projects} == {"1000", "1001", "1002", "1003"}
    levels = {i["fields"]["security"]["id"] for i in site.issues if i["fields"]["security"]}
    assert levels == {"3000", "3001", "3002", "3003"}
    member_of = {u: {g for g, grp in fx.groups.items() if u in grp["members"]} for u in fx.users}
    assert any(len(gs) >= 2 for gs in member_of.values()) and any(not gs for gs in member_of.values())
    visibility = {(c.get("visibility") or {}).get("type") for _, _, c in points(fx) if c is not None}
    assert visibility == {None, "role", "group"}
    listing = httpx.Client(base_url=site.base_url, transport=sample_transport(site)).get("/rest/api/3/field").json()
    assert custom_fields.access_fields(listing)[USER_PICKER] == "user"
    assert custom_fields.access_fields(listing)[GROUP_PICKER] == "group"
    # with permissions=off: no levels, no restricted comments beyond the generated one, no routes
    off = build_sample_site(URL + "&permissions=off")
    assert off.permissions is None and not any(i["fields"]["security"] for i in off.issues)
    with httpx.Client(base_url=off.base_url, transport=sample_transport(off)) as http:
        assert http.get("/rest/api/3/project/PAY/permissionscheme").status_code == 404
    with httpx.Client(base_url=site.base_url, transport=sample_transport(site)) as http:
        assert http.get("/rest/api/3/project/PAY/permissionscheme").status_code == 200
    assert permission_fixture_for(URL) is sample_site_for(URL).permissions
    with pytest.raises(ValueError, match="permissions='maybe'"):
        build_sample_site(URL + "&permissions=maybe")


def test_permissions_change_no_embedded_text() -> None:
    """Summaries, descriptions, custom fields the tenant names, comment bodies: as without rules."""
    wanted = ("Story Points", "Team", "Root cause", "Customer contact")
    on, off = build_sample_site(URL), build_sample_site(URL + "&permissions=off")
    rows_on, rows_off = _rows(_fetch(on, _tenant(on, wanted))), _rows(_fetch(off, _tenant(off, wanted)))
    assert [ISSUES.text(r) for r in rows_on] == [ISSUES.text(r) for r in rows_off]
    assert not any("Reviewers" in ISSUES.text(r) or "Owning team" in ISSUES.text(r) for r in rows_on)
    bodies = {
        tag: [parse_comment(c)["body"] for i in site.issues for c in i["fields"]["comment"]["comments"]]
        for tag, site in (("on", on), ("off", off))
    }
    assert bodies["on"] == bodies["off"]
    # a tenant that names a picker still gets it rendered (the tenant's fields are the rendered ones)
    named = _rows(_fetch(on, _tenant(on, ("Reviewers",))))
    assert any("Reviewers: " in ISSUES.text(r) for r in named)
    assert all(r["access_facts"]["pickers_known"] for r in named)


def test_committed_facts_give_the_access_the_sites_json_gives_and_the_oracle_agrees(engine: Engine) -> None:
    site = build_sample_site(URL)
    fx = site.permissions
    tenant = _tenant(site)
    _sync(engine, site, tenant)
    with engine.connect() as conn:
        facts = issue_facts(conn, tenant.id)
        projects = projects_for_permissions(conn, tenant.id)
    assert sorted(p["id"] for p in projects) == sorted(p["id"] for p in site.projects)
    assert all(p["lead"]["accountId"] == site.project(p["id"])["lead"]["accountId"] for p in projects)
    with httpx.Client(base_url=site.base_url, transport=sample_transport(site)) as http:
        fetched = fetch_permissions(JiraClient(http, tenant.id, site.base_url), projects, facts)
    committed = compute_access(fetched.snapshot, facts)
    from_json = compute_access(fetched.snapshot, [issue_facts_from_json(i) for i in site.issues])
    assert {k: a.principals for k, a in committed.items()} == {k: a.principals for k, a in from_json.items()}
    lists = {k: a.principals for k, a in committed.items()}
    assert len(lists) == sum(1 for _ in points(fx)), "every issue and comment has a list"
    assert not [k for k, acl in lists.items() if RESTRICTED in acl], sorted(a.reason for a in committed.values())
    assert mismatches(fx, lists) == []
    # not trivial: users see different sets, and nobody but the oracle's few sees everything
    users = [*sorted(fx.users), ANONYMOUS]
    seen = {u: frozenset(k for k, i, c in points(fx) if oracle_can_see(fx, u, i, c)) for u in users}
    assert len(set(seen.values())) >= 8
    assert 0 < len(seen[ANONYMOUS]) < len(lists)


def test_without_the_field_listing_access_by_pickers_fails_safe(engine: Engine) -> None:
    """``GET /field`` refused: the sync carries on; issues whose access a picker decides fail safe."""
    site = build_sample_site(URL)
    inner = sample_transport(site)

    def refuse_fields(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/rest/api/3/field":
            return httpx.Response(403, json={"errorMessages": ["no"]}, request=request)
        return inner.handle_request(request)

    tenant = _tenant(site)
    _sync(engine, site, tenant, httpx.MockTransport(refuse_fields))
    with engine.connect() as conn:
        facts = issue_facts(conn, tenant.id)
        projects = projects_for_permissions(conn, tenant.id)
    assert facts and all(f.known_fields == frozenset() and f.security_known for f in facts)
    with httpx.Client(base_url=site.base_url, transport=inner) as http:
        fetched = fetch_permissions(JiraClient(http, tenant.id, site.base_url), projects, facts)
    access = compute_access(fetched.snapshot, facts)
    scheme_of = {p["id"]: p["scheme"] for p in site.permissions.projects}
    by_scheme: dict[str, set[bool]] = {}
    for f in facts:
        by_scheme.setdefault(scheme_of[f.project_id], set()).add(access[f"issue:{f.id}"].principals == (RESTRICTED,))
    # Engineering grants browse to a user picker: all its issues fail safe; Open and HR do not need pickers
    assert by_scheme["1001"] == {True} and by_scheme["1000"] == {False} and by_scheme["1003"] == {False}
    lists = {k: a.principals for k, a in access.items()}
    assert [m for m in mismatches(site.permissions, lists) if m.startswith("LEAK")] == []


def test_every_request_of_an_issue_sync_with_access_facts_is_in_the_spec() -> None:
    from etl_assets_tests.test_sample_site import spec_problems

    spec = load_corpus_json("jira-platform-swagger-v3.v3.json")
    site = build_sample_site(URL)
    inner = sample_transport(site)
    sent: list[tuple[str, str, dict[str, str], Any]] = []

    def record(request: httpx.Request) -> httpx.Response:
        import json

        sent.append(
            (request.method, request.url.path, dict(request.url.params), json.loads(request.content or b"null"))
        )
        return inner.handle_request(request)

    pages = _fetch(site, _tenant(site, ("Team",)), httpx.MockTransport(record))
    assert sent[0][:2] == ("GET", custom_fields.FIELD_PATH)
    assert sum(1 for m, p, _, _ in sent if p == custom_fields.FIELD_PATH) == 1, "one field listing per sync"
    searches = [b for m, p, _, b in sent if p.endswith("/search/jql")]
    assert searches and all({"security", USER_PICKER, GROUP_PICKER} <= set(b["fields"]) for b in searches)
    assert [p for m, path, q, b in sent for p in spec_problems(spec, m, path, q, b)] == []
    search_pages = [p for p in pages if p.path.endswith("/search/jql")]
    assert all(
        p.params["access_fields"] == {"customfield_10036": "user", USER_PICKER: "user", GROUP_PICKER: "group"}
        for p in search_pages
    )
    # comments paged from /issue/{id}/comment carry their visibility too
    assert COMMENTS.parse({"id": "9", "visibility": {"type": "group", "identifier": "g", "value": "n"}})[
        "access_facts"
    ] == {"visibility": {"type": "group", "identifier": "g", "value": "n"}}
