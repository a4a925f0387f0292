"""Custom fields: names resolved to ids (duplicates kept, unknown names warned), values rendered
to text by type (unknown shapes readable, never an error), scalars in the payload."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest

from etl_assets.core.records import FetchRequest
from etl_assets.core.sources.jira import custom_fields
from etl_assets.core.sources.jira.client import JiraClient
from etl_assets.core.sources.jira.sample import generate_sample_site, sample_transport
from etl_assets.core.sources.jira.sample.documents import CUSTOM_FIELDS, ROOT_CAUSES
from etl_assets.core.sources.jira.source import JiraSiteConfig
from etl_assets.core.sources.jira.specs import ISSUES
from etl_assets.core.tenants import Tenant, TenantConfigError, TenantRegistry
from etl_assets_tests.corpus import load_corpus_json


def test_names_resolve_to_ids_duplicates_are_all_kept_unknown_names_warn():
    listing = [*CUSTOM_FIELDS, {"id": "summary", "name": "Summary", "custom": False}]
    got = custom_fields.resolve(("story points", "Team", "customfield_10032", "Nope", "customfield_99"), listing, "t1")
    assert got.ids == ("customfield_10016", "customfield_10031", "customfield_10033", "customfield_10032")
    assert got.names["customfield_10033"] == "Team" and got.names["customfield_10032"] == "Root cause"
    assert any("'Team' names 2 fields (customfield_10031, customfield_10033)" in w for w in got.warnings)
    assert any("'Nope' is not on the site" in w for w in got.warnings)
    assert any("'customfield_99' is not on the site" in w for w in got.warnings)
    # A system field is never taken for a custom one of the same name.
    assert custom_fields.resolve(("Summary",), listing, "t1").ids == ()


def test_the_real_field_zoo_resolves_every_duplicated_name_to_all_its_fields():
    zoo = load_corpus_json("public-jira-dataset", "jira_field_information.json")
    listing = zoo["Apache"]
    names = Counter(f["name"] for f in listing if f.get("custom"))
    duplicated = sorted(n for n, k in names.items() if k > 1)
    assert duplicated, "the Apache site has custom fields sharing a name"
    got = custom_fields.resolve(tuple(duplicated[:5]), listing, "apache")
    assert len(got.ids) == sum(names[n] for n in duplicated[:5])
    assert len(got.warnings) == 5


@pytest.mark.parametrize(
    ("value", "schema", "text"),
    [
        (5.0, {"type": "number"}, "5"),
        (2.5, {"type": "number"}, "2.5"),
        ({"value": "Falcon", "id": "1"}, {"type": "option"}, "Falcon"),
        ([{"value": "EU"}, {"value": "US"}], {"type": "array", "items": "option"}, "EU, US"),
        ({"value": "Payments", "child": {"value": "Cards"}}, {"type": "option-with-child"}, "Payments → Cards"),
        ({"accountId": "1", "displayName": "Ana Silva"}, {"type": "user"}, "Ana Silva"),
        ([{"displayName": "Ana"}, {"displayName": "Bo"}], {"type": "array", "items": "user"}, "Ana, Bo"),
        ({"name": "jira-admins", "groupId": "x"}, {"type": "group"}, "jira-admins"),
        ("2026-03-04", {"type": "date"}, "2026-03-04"),
        ("2022-12-09T00:00:00.000-0800", {"type": "datetime"}, "2022-12-09 00:00"),
        (["a", "b"], {"type": "array", "items": "string"}, "a, b"),
        ("https://x.example/rb", {"type": "string", "custom": "x:url"}, "https://x.example/rb"),
        (
            {"type": "doc", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "Hi"}]}]},
            {"type": "string"},
            "Hi",
        ),
        (True, None, "yes"),
        ({"weird": {"nested": [1, 2]}}, {"type": "any"}, '{"weird": {"nested": [1, 2]}}'),
        ({"name": "Team A", "title": "Team A", "id": "t"}, {"type": "team"}, "Team A"),
    ],
)
def test_render_by_type(value, schema, text):
    assert custom_fields.render(value, schema) == text


def test_real_values_render_without_error_and_a_shape_change_is_just_new_text():
    real = load_corpus_json("airbyte-source-jira", "issues.json")["issues"][0]["fields"]
    for fid, value in real.items():
        if fid.startswith("customfield_"):
            for schema in (None, {"type": "option"}, {"type": "array", "items": "user"}, {"type": "date"}):
                assert isinstance(custom_fields.render(value, schema), str)
    assert custom_fields.render(real["customfield_10003"], {"type": "array", "items": "user"})  # users by name
    # The same field, first an option, then (the site changed its type) a plain number: both read fine.
    record = {
        "id": "1",
        "key": "A-1",
        "names": {"customfield_1": "Team"},
        "schema": {"customfield_1": {"type": "option"}},
        "fields": {"summary": "s", "updated": "2026-01-01T00:00:00.000+0000", "customfield_1": {"value": "Falcon"}},
    }
    first = ISSUES.parse(record)
    record["fields"]["customfield_1"] = 42
    second = ISSUES.parse(record)
    assert first["custom_fields"] == {"Team": {"text": "Falcon", "value": "Falcon", "kind": "keyword"}}
    # The schema still says option: the filter value stays text, so one keyword index serves both runs.
    assert second["custom_fields"] == {"Team": {"text": "42", "value": "42", "kind": "keyword"}}
    assert "Team: 42" in ISSUES.text(second) and ISSUES.payload(second)["cf_team"] == "42"


def test_tenants_file_custom_fields_are_checked():
    ok = TenantRegistry.from_mapping(
        {"tenants": [{"id": "a", "jira": {"url": "sample://a", "custom_fields": ["Story Points", "customfield_1"]}}]},
        source="t.yaml",
    )
    assert ok.get("a").section("jira").custom_fields == ("Story Points", "customfield_1")
    with pytest.raises(TenantConfigError, match="jira.custom_fields must be a list"):
        TenantRegistry.from_mapping(
            {"tenants": [{"id": "a", "jira": {"url": "sample://a", "custom_fields": "Story Points"}}]}, source="t.yaml"
        )


def test_sample_fetch_renders_configured_fields_into_text_and_payload():
    site = generate_sample_site(n_projects=8, n_issues=80)
    wanted = ("Story Points", "Team", "Root cause", "Area", "Affected sites", "Customer contact", "Target date", "Nope")
    tenant = Tenant(
        "acme", "Acme", {"jira": JiraSiteConfig(url=site.base_url, email_env="E", token_env="T", custom_fields=wanted)}
    )
    with httpx.Client(base_url=site.base_url, transport=sample_transport(site)) as http:
        client = JiraClient(http, "acme", site.base_url)
        pages = list(ISSUES.fetch(client, FetchRequest(tenant, page_size=100)))
    assert pages[0].path == custom_fields.FIELD_PATH
    search = next(p for p in pages if p.path.endswith("/search/jql"))
    assert "customfield_10033" in search.params["body"]["fields"]
    rows = [ISSUES.parse(r) for p in pages for r in ISSUES.records(p.json())]
    assert len(rows) == 80
    with_fields = [r for r in rows if r["custom_fields"]]
    assert with_fields
    cause, _ = ROOT_CAUSES[0]
    holder = next(r for r in rows if r["key"] in site.custom_facts[cause])
    assert f"Root cause: {cause}" in ISSUES.text(holder)
    pointed = next(r for r in with_fields if "Story Points" in r["custom_fields"])
    assert isinstance(ISSUES.payload(pointed)["cf_story_points"], int | float)
    teams = {r["custom_fields"]["Team"]["text"] for r in with_fields if "Team" in r["custom_fields"]}
    assert teams <= {"Falcon", "Otter", "Lynx"} and teams
    json.dumps([ISSUES.payload(r) for r in rows])  # every payload is JSON


@pytest.mark.parametrize(
    ("value", "schema", "kind", "single"),
    [
        (5, {"type": "number"}, "float", 5),
        (2.5, {"type": "number"}, "float", 2.5),
        ("2026-03-04", {"type": "date"}, "datetime", "2026-03-04T00:00:00+00:00"),
        ("2022-12-09T00:00:00.000-0800", {"type": "datetime"}, "datetime", "2022-12-09T00:00:00-08:00"),
        ("someday", {"type": "date"}, "datetime", None),  # not a date: text only, never an error
        ({"value": "Falcon", "id": "1"}, {"type": "option"}, "keyword", "Falcon"),
        (42, {"type": "option"}, "keyword", "42"),  # the site changed the field's values, not its type
        ({"accountId": "1", "displayName": "Ana Silva"}, {"type": "user"}, "keyword", "Ana Silva"),
        ([{"value": "EU"}, {"value": "US"}], {"type": "array", "items": "option"}, "keyword", None),
        (
            {"type": "doc", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "Hi"}]}]},
            {"type": "string"},
            "keyword",
            None,
        ),
        (7, None, "float", 7),  # no schema: the value decides
    ],
)
def test_single_values_are_filter_values_of_their_fields_index_kind(value, schema, kind, single):
    assert custom_fields.index_kind(value, schema) == kind
    assert custom_fields.scalar(value, custom_fields.render(value, schema), kind) == single


def test_rich_text_fields_are_parts_of_their_own_and_the_rest_are_filter_fields():
    record = {
        "id": "1",
        "key": "A-1",
        "names": {"customfield_1": "Root cause", "customfield_2": "Story Points", "customfield_3": "Target date"},
        "schema": {
            "customfield_1": {"type": "string"},
            "customfield_2": {"type": "number"},
            "customfield_3": {"type": "date"},
        },
        "fields": {
            "summary": "Checkout fails",
            "updated": "2026-01-01T00:00:00.000+0000",
            "description": {
                "type": "doc",
                "version": 1,
                "content": [{"type": "paragraph", "content": [{"type": "text", "text": "Long story."}]}],
            },
            "customfield_1": {
                "type": "doc",
                "version": 1,
                "content": [{"type": "paragraph", "content": [{"type": "text", "text": "An expired certificate."}]}],
            },
            "customfield_2": 3,
            "customfield_3": "2026-05-01",
        },
    }
    row = ISSUES.parse(record)
    parts = ISSUES.sections(row)
    assert parts[0].startswith("A-1: Checkout fails") and "Story Points: 3" in parts[0] and "Long story." in parts[0]
    assert "Root cause" not in parts[0] and parts[1] == "Root cause: An expired certificate."
    assert ISSUES.text(row) == "\n\n".join(parts)
    assert ISSUES.row_filters(row) == {
        "cf_story_points": ("float", "Story Points"),
        "cf_target_date": ("datetime", "Target date"),
    }
    assert ISSUES.payload(row)["cf_target_date"] == "2026-05-01T00:00:00+00:00"


def test_a_row_committed_before_kinds_were_recorded_indexes_only_its_numbers():
    old = {"Story Points": {"text": "5", "value": 5}, "Target date": {"text": "2026-03-04", "value": "2026-03-04"}}
    # The text could be a date or an option: no index is guessed for it (the first one would stay).
    assert custom_fields.filter_fields(old) == {"cf_story_points": ("float", "Story Points")}
