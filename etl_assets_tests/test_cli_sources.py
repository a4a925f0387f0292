"""``etl-assets search --source``: one query over a tenant's Jira and GitHub, each hit naming its source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from etl_assets.cli import build_parser, parse_sources
from etl_assets_tests.convergence import read_points
from etl_assets_tests.test_cli import _cli, _env


def test_sources_are_repeatable_or_comma_lists_and_an_unknown_one_names_the_known():
    assert parse_sources(None) is None
    assert parse_sources(["github"]) == ["github"]
    assert parse_sources(["jira,github", "JIRA"]) == ["jira", "github"]
    assert parse_sources(["jira", " github "]) == ["jira", "github"]
    with pytest.raises(ValueError, match=r"^unknown source 'gitlab' in --source; known sources: jira, github$"):
        parse_sources(["jira,gitlab"])
    with pytest.raises(ValueError, match="names no source"):
        parse_sources([","])
    args = build_parser().parse_args(
        ["search", "q", "--tenant", "1", "--unrestricted", "--source", "jira", "--source", "github"]
    )
    assert args.source == ["jira", "github"] and args.entity is None


def test_an_unknown_source_is_one_line_and_exit_2(tmp_path):
    done = _cli(
        "search", "login", "--tenant", "1", "--unrestricted", "--source", "jira,gitlab", cwd=tmp_path, env=_env()
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "etl-assets search: unknown source 'gitlab' in --source; known sources: jira, github"
    ]


def _search(env, *args: str, tenants: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = {"ETL_TENANTS_FILE": str(tenants)} if tenants else {}
    return subprocess.run(
        [sys.executable, "-m", "etl_assets.cli", "search", "--unrestricted", *args],
        env={**env.process_env(), **extra, "COLUMNS": "160"},
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _rows(done: subprocess.CompletedProcess[str]) -> tuple[list[str], list[list[str]]]:
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    return lines[0].split(), [line.split() for line in lines[1:]]


@pytest.mark.slow
def test_search_spans_the_tenants_sources_and_source_filters_them(env):
    assert env.materialize("1").success
    points = read_points(env, with_vectors=False)
    target = next(p for p in points["client_1_github_issues"]["points"] if p.payload["chunk"] == 0)

    # Default: every source the tenant has; each hit says where it came from.
    header, rows = _rows(_search(env, target.payload["text"], "--tenant", "1", "-k", "3", "--mode", "dense"))
    assert header[:4] == ["score", "source", "key", "title"]
    assert rows[0][1:3] == ["github", target.payload["key"]]
    broad = _search(env, "login fails", "--tenant", "1", "-k", "200")
    _, rows = _rows(broad)
    assert {r[1] for r in rows} == {"jira", "github"}
    jira_keys = {p.payload["key"] for p in points["client_1_issues"]["points"]}
    assert all(r[2] in jira_keys for r in rows if r[1] == "jira")

    # A filter keeps only its source's hits; a repeated flag and a comma list say the same.
    for source in ("jira", "github"):
        _, only = _rows(_search(env, "login fails", "--tenant", "1", "-k", "200", "--source", source))
        assert only and {r[1] for r in only} == {source}
        assert [r for r in rows if r[1] == source][:5] == only[:5]
    both = _search(env, "login fails", "--tenant", "1", "-k", "200", "--source", "jira", "--source", "github")
    assert both.stdout == broad.stdout
    assert _search(env, "login fails", "--tenant", "1", "-k", "200", "--source", "github,jira").stdout == broad.stdout

    # Jira filters apply to Jira only: refused with another source, one line.
    mixed = _search(env, "login", "--tenant", "1", "--source", "github", "--project", "P1")
    assert mixed.returncode == 2 and mixed.stderr.count("\n") == 1 and "--source jira" in mixed.stderr


@pytest.mark.slow
def test_a_jira_only_tenant_keeps_the_jira_output_and_refuses_github(env, tmp_path):
    assert env.materialize("1").success
    registry = yaml.safe_load(env.tenants_yaml().read_text())
    for tenant in registry["tenants"]:
        tenant.pop("github", None)
    jira_only = tmp_path / "jira_only.yaml"
    jira_only.write_text(yaml.safe_dump(registry))

    default = _search(env, "login fails", "--tenant", "1", "-k", "5", tenants=jira_only)
    header, rows = _rows(default)
    assert header[:3] == ["score", "key", "title"] and "source" not in header
    assert (
        rows and default.stdout == _search(env, "login fails", "--tenant", "1", "-k", "5", "--entity", "issues").stdout
    )
    # Asked for by name, Jira hits say their source.
    header, named = _rows(
        _search(env, "login fails", "--tenant", "1", "-k", "5", "--source", "jira", tenants=jira_only)
    )
    assert header[:3] == ["score", "source", "key"] and [r[2] for r in named] == [r[1] for r in rows]
    assert {r[1] for r in named} == {"jira"}
    refused = _search(env, "login", "--tenant", "1", "--source", "github", tenants=jira_only)
    assert refused.returncode == 2
    assert refused.stderr == "etl-assets search: tenant 1 has no github source (its sources: jira)\n"
