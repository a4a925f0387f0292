"""GitHub as a second source, end to end over a loopback GitHub REST server: tables equal the
org, points equal live rows, a no-change sync is all 304s, and every change converges —
edits, deletions and transfers, locks, a renamed repository, one made invisible to the token,
a pull request closed and reopened."""

from __future__ import annotations

import dagster as dg
import pytest

from etl_assets.core.sources.github.specs import ISSUES, PULL_REQUESTS, REVIEW_COMMENTS
from etl_assets.core.vectorstore import collection_name, point_id
from etl_assets_tests.convergence import assert_converged, read_points
from etl_assets_tests.github_env import GITHUB_ENTITIES, github_for, reconcile_config, rows, run


def _meta(result: dg.ExecuteInProcessResult, key: str) -> dict[str, object]:
    return {k: v.value for k, v in result.asset_materializations_for_node(key)[0].metadata.items()}


def test_first_sync_matches_the_org_and_ids_name_the_source(env, monkeypatch):
    with github_for(env, monkeypatch) as gh:
        result = run(env, gh)
        assert result.success, result.all_events
        assert_converged(env, "1", entities=GITHUB_ENTITIES)
        site = gh.site
        issues = rows(env, ISSUES)
        assert len(issues) == sum(1 for i in site.items.values() if not i.is_pr) > 0
        assert len(rows(env, PULL_REQUESTS)) == sum(1 for i in site.items.values() if i.is_pr) > 0
        assert rows(env, REVIEW_COMMENTS), "the sample org has review comments"
        # Labels and milestones are fields of the rows and the payload.
        labelled = next(i for i in site.items.values() if not i.is_pr and i.labels and i.milestone)
        row = issues[str(labelled.id)]
        assert row["labels"] == labelled.labels and row["milestone"] == labelled.milestone
        points = read_points(env, with_vectors=False)[collection_name("1", ISSUES.name)]["points"]
        head = next(p for p in points if p.payload["external_id"] == str(labelled.id) and p.payload["chunk"] == 0)
        assert head.payload["source"] == "github" and head.payload["labels"] == labelled.labels
        assert str(head.id) == point_id("1", "github_issues", str(labelled.id), 0)
        assert point_id("1", "github_issues", "1", 0) != point_id("1", "issues", "1", 0)
        assert collection_name("1", ISSUES.name) == "client_1_github_issues"


def test_a_tenant_without_github_asks_nothing_and_removing_github_empties_its_index(env, monkeypatch):
    with github_for(env, monkeypatch) as gh:
        result = run(env, gh, tenant="2")
        assert result.success
        assert gh.server.requests_received == 0
        assert _meta(result, "github__raw__raw_github_github_issues")["source_configured"] is False
        assert all(not rows(env, spec, "2") for spec in GITHUB_ENTITIES)
        # Tenant 1 indexes its org, then its github section is removed: its rows and points leave.
        assert run(env, gh).success and rows(env, ISSUES)
        asked = gh.server.requests_received
        assert run(env, gh, with_github=False).success
        assert gh.server.requests_received == asked
        collections = read_points(env, with_vectors=False)
        for spec in GITHUB_ENTITIES:
            assert not rows(env, spec), spec.name
            assert collections[collection_name("1", spec.name)]["points"] == [], spec.name


def test_a_sync_without_changes_is_all_304s_and_embeds_nothing(env, monkeypatch):
    with github_for(env, monkeypatch) as gh:
        assert run(env, gh).success  # a full listing: no watermark yet
        assert run(env, gh).success  # the first incremental sync asks with a new `since`
        before, remaining, free = gh.handler.requests, gh.handler.remaining, gh.handler.not_modified
        second = run(env, gh, run_config=reconcile_config())  # a full listing, the most a sync asks
        assert second.success
        asked = gh.handler.requests - before
        assert asked > 0 and gh.handler.not_modified - free == asked, "every request of the second sync was a 304"
        assert gh.handler.remaining == remaining, "no rate limit spent"
        for spec in GITHUB_ENTITIES:
            table = _meta(second, f"tables__{spec.name}_table")
            assert table["inserted"] == table["updated"] == table["deleted"] == 0, (spec.name, table)
            vectors = _meta(second, f"vectors__{spec.name}_vectors")
            assert vectors.get("rows_embedded", 0) == 0, (spec.name, vectors)
        raw = _meta(second, "github__raw__raw_github_github_issues")
        assert raw["github_not_modified"] == raw["github_requests"] > 0
        assert_converged(env, "1", entities=GITHUB_ENTITIES)


def test_every_kind_of_change_converges(env, monkeypatch):
    with github_for(env, monkeypatch) as gh:
        site = gh.site
        assert run(env, gh).success
        issues = [i for i in site.items.values() if not i.is_pr]
        prs = [i for i in site.items.values() if i.is_pr]
        repos = list(site.repos)
        site.edit(issues[0].id, title="Login fails for SSO users", labels=["bug", "security"], milestone="v2.0")
        site.delete(issues[1].id)
        site.transfer(issues[2].id, repos[1] if issues[2].repo_id == repos[0] else repos[0])
        site.lock(issues[3].id)
        site.close(prs[0].id)
        site.reopen(prs[0].id)
        site.add_comment(issues[4].id, "Still happening on the latest build")
        site.rename_repo(repos[0], "renamed-service")
        # An incremental sync sees edits, transfers and locks at once.
        assert run(env, gh).success
        assert rows(env, ISSUES)[str(issues[0].id)]["title"] == "Login fails for SSO users"
        assert rows(env, PULL_REQUESTS)[str(prs[0].pr_id)]["state"] == "open"
        # Deletions (GitHub has no feed of them) and the renamed repository's untouched issues
        # converge at the reconciliation's full listing.
        assert run(env, gh, run_config=reconcile_config()).success
        assert_converged(env, "1", entities=GITHUB_ENTITIES)
        assert str(issues[1].id) in rows(env, ISSUES, live=False)
        site.hide_repo(repos[1])  # made private to others than the token's owner: 404 from now on
        assert run(env, gh, run_config=reconcile_config()).success
        assert_converged(env, "1", entities=GITHUB_ENTITIES)
        assert not [r for r in rows(env, ISSUES).values() if r["repo"] == site.repos[repos[1]].full_name]


@pytest.mark.parametrize("listing", ["org", "repos"])
def test_a_renamed_repository_is_followed_through_githubs_redirect(env, monkeypatch, listing):
    with github_for(env, monkeypatch) as gh:
        site = gh.site
        first = next(iter(site.repos.values()))
        tenant = {"org": None, "repos": [r.full_name for r in site.repos.values()]} if listing == "repos" else {}
        assert run(env, gh, tenant_github=tenant).success
        site.rename_repo(first.id, "new-name")
        assert run(env, gh, tenant_github=tenant, run_config=reconcile_config()).success
        assert_converged(env, "1", entities=GITHUB_ENTITIES)
        if listing == "repos":
            assert any(r.path.startswith("/api/v3/repositories/") for r in gh.seen), "followed the 301"


def test_a_run_killed_after_landing_converges_on_the_next(env, monkeypatch):
    """Raw batches landed by runs that died before their table step are consumed, in order, by the
    next run; nothing they held is lost and the newest version of each record wins."""
    with github_for(env, monkeypatch) as gh:
        site = gh.site
        raw_only = " or ".join(f'key:"github/raw/raw_github_{s.name}"' for s in GITHUB_ENTITIES)
        assert run(env, gh, selection=raw_only).success  # killed here: tables never built
        issue = next(i for i in site.items.values() if not i.is_pr)
        site.edit(issue.id, title="Edited between two killed runs")
        site.delete(next(i for i in site.items.values() if not i.is_pr and i.id != issue.id).id)
        assert run(env, gh, selection=raw_only, run_config=reconcile_config()).success  # killed again
        assert run(env, gh).success
        assert_converged(env, "1", entities=GITHUB_ENTITIES)
        assert rows(env, ISSUES)[str(issue.id)]["title"] == "Edited between two killed runs"


def test_the_change_sensor_asks_each_repository_once_and_runs_only_on_a_change(env, monkeypatch):
    from etl_assets.defs.build import build_definitions
    from etl_assets_tests.github_env import registry, resources

    with github_for(env, monkeypatch) as gh:
        defs = build_definitions(
            registry=registry(env, gh), resources=resources(env), env={"DATABASE_URL": env.database_url}
        )
        sensor = defs.resolve_sensor_def("github_github_issue_changes")
        res = resources(env)

        def evaluate(cursor: str | None = None):  # type: ignore[no-untyped-def]
            with dg.DagsterInstance.ephemeral() as instance:
                with dg.build_sensor_context(
                    instance=instance, cursor=cursor, resources={"github": res["github"], "database": res["database"]}
                ) as context:
                    return sensor(context)

        assert run(env, gh).success
        asked = gh.server.requests_received
        quiet = evaluate()
        assert [r.partition_key for r in quiet.run_requests] == ["2"], "tenant 2 never synced GitHub (empty)"
        # The org listing (a 304) and one probe per repository.
        assert gh.server.requests_received - asked == 1 + len(gh.site.repos)
        issue = next(i for i in gh.site.items.values() if not i.is_pr)
        gh.site.edit(issue.id, title="Changed after the sync")
        changed = evaluate(quiet.cursor)
        assert "1" in [r.partition_key for r in changed.run_requests]
