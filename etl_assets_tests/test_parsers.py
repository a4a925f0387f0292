"""Parsers accept the real Jira captures in the shared corpus and refuse broken records clearly."""

import pytest

from etl_assets.core.sources.jira.parsers import (
    RecordError,
    parse_issue,
    parse_jira_datetime,
    parse_project,
    parse_status,
    parse_wit,
)
from etl_assets.core.sources.jira.specs import ISSUES, PROJECTS, STATUSES, WITS
from etl_assets_tests.corpus import load_corpus_json


def test_apache_projects_all_parse_and_names_are_trimmed():
    projects = load_corpus_json("go-jira", "all_projects.json")
    rows = [parse_project(p) for p in PROJECTS.records(projects)]
    assert len(rows) == 567
    assert len({r["external_id"] for r in rows}) == 567
    assert sum(1 for r in rows if r["category"]) == 511
    names = {r["name"] for r in rows}
    assert "Agila" in names and " Agila" not in names


def test_spec_project_search_page_parses():
    page = load_corpus_json("atlassian-spec-examples", "project_search.200.json")
    rows = [parse_project(p) for p in PROJECTS.records(page)]
    assert [r["key"] for r in rows] == ["EX", "ABC"]
    assert rows[0]["category"] == "FIRST"
    assert rows[0]["management"] == "company-managed"


def test_issue_types_of_sixteen_public_jiras_parse():
    data = load_corpus_json("public-jira-dataset", "jira_issuetype_information.json")
    total = 0
    for site, types in data.items():
        for record in types.values():
            row = parse_wit(record)
            assert row["name"], site
            total += 1
    assert len(data) == 16
    assert total >= 480


def test_spec_issue_types_carry_team_managed_scope():
    rows = [parse_wit(r) for r in WITS.records(load_corpus_json("atlassian-spec-examples", "issuetype.200.json"))]
    bug = next(r for r in rows if r["name"] == "Bug")
    assert bug["scope_type"] == "PROJECT" and bug["scope_project_id"] == "10000"
    assert next(r for r in rows if r["name"] == "Task")["scope_project_id"] is None


@pytest.mark.parametrize(
    "parts",
    [
        ("go-jira", "all_statuses.json"),
        ("airbyte-source-jira", "workflow_statuses.json"),
        ("atlassian-spec-examples", "status.200.json"),
        ("jira-ruby", "status.json"),
    ],
)
def test_real_status_listings_parse(parts):
    data = load_corpus_json(*parts)
    records = STATUSES.records(data)
    assert records, parts
    rows = [parse_status(r) for r in records]
    assert all(r["name"] and r["external_id"] for r in rows)
    assert any(r["category_key"] for r in rows)


def test_v3_search_issues_with_adf_parse():
    data = load_corpus_json("airbyte-source-jira", "issues.json")
    records = ISSUES.records(data) if isinstance(data, dict) and "issues" in data else data
    rows = [parse_issue(r) for r in records]
    assert rows and all(r["key"] and r["updated"] for r in rows)
    assert any(r["description"] for r in rows), "ADF descriptions should become text"


def test_v3_spec_search_example_is_refused_with_a_reason():
    # The spec's example issue has no summary: it must be quarantined with that reason, not crash.
    data = load_corpus_json("atlassian-spec-examples", "search_jql_post.200.json")
    [record] = ISSUES.records(data)
    with pytest.raises(RecordError) as err:
        parse_issue(record)
    assert err.value.external_id == record["id"]
    assert "'summary'" in err.value.reason


@pytest.mark.parametrize(
    ("parser", "record", "reason"),
    [
        (parse_project, {"key": "A", "name": "x"}, "missing or invalid 'id'"),
        (parse_project, {"id": "1", "key": None, "name": "x"}, "'key' and 'name'"),
        (parse_wit, {"id": True, "name": "x"}, "missing or invalid 'id'"),
        (parse_status, {"id": "1", "name": ["list"]}, "'name'"),
        (parse_issue, {"id": "1", "key": "A-1", "fields": "nope"}, "'fields' must be an object"),
        (parse_issue, {"id": "1", "key": "A-1", "fields": {"summary": "s", "updated": "yesterday"}}, "'updated'"),
        (parse_project, ["not", "a", "dict"], "expected a JSON object"),
    ],
)
def test_bad_records_raise_record_error_with_reason(parser, record, reason):
    with pytest.raises(RecordError) as err:
        parser(record)
    assert reason in err.value.reason


def test_jira_datetimes_become_utc():
    assert parse_jira_datetime("2026-03-04T10:15:30.000+0100").isoformat() == "2026-03-04T09:15:30+00:00"
    assert parse_jira_datetime("not a date") is None


def test_a_hierarchy_level_outside_the_column_range_is_dropped_not_fatal():
    from etl_assets.core.sources.jira.parsers import parse_wit

    row = parse_wit({"id": "10001", "name": "Epic", "hierarchyLevel": 10**20})
    assert row["hierarchy_level"] is None
    assert parse_wit({"id": "10002", "name": "Story", "hierarchyLevel": 0})["hierarchy_level"] == 0
