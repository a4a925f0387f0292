"""Every request the permission fetcher sends is valid against Jira Cloud's v3 OpenAPI spec, and the
fixture answers with keys the spec's schemas know (skip without the corpus; fail under CI=true)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from etl_assets.core.permissions import issue_facts_from_json
from etl_assets.core.sources.jira.client import JiraClient
from etl_assets.core.sources.jira.permissions import fetch_permissions
from etl_assets.core.sources.jira.sample.permissions import generate_permission_fixture, permission_transport
from etl_assets_tests.corpus import load_corpus_json


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = load_corpus_json("jira-platform-swagger-v3.v3.json")
    return loaded


def _operation(spec: dict[str, Any], method: str, path: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """The spec's path template and operation matching a concrete path, and the path parameters' values."""
    for template, ops in spec["paths"].items():
        names = re.findall(r"{([^}]+)}", template)
        pattern = "^" + re.sub(r"{[^}]+}", "([^/]+)", template) + "$"
        m = re.match(pattern, path)
        if m and method.lower() in ops:
            # a literal segment beats a parameter (``/project/search`` vs ``/project/{id}``)
            return template, ops[method.lower()], dict(zip(names, m.groups(), strict=True))
    raise AssertionError(f"{method} {path}: no such operation in the spec")


def _valid(schema: dict[str, Any], value: str) -> bool:
    kind = schema.get("type")
    if kind == "integer":
        return re.fullmatch(r"-?\d+", value) is not None
    if kind == "boolean":
        return value in ("true", "false")
    if "enum" in schema:
        return value in schema["enum"]
    return True


def check_request(spec: dict[str, Any], request: httpx.Request) -> str:
    """Assert ``request`` is valid against the spec; return the spec's path template."""
    template, op, path_values = _operation(spec, request.method, request.url.path)
    declared = {p["name"]: p for p in op.get("parameters", [])}
    what = f"{request.method} {request.url}"
    for name, value in path_values.items():
        param = declared[name]
        assert param["in"] == "path" and _valid(param["schema"], value), f"{what}: path parameter {name}={value!r}"
    for name, value in request.url.params.multi_items():
        assert name in declared and declared[name]["in"] == "query", f"{what}: query parameter {name!r} not in spec"
        schema = declared[name]["schema"]
        item_schema = schema.get("items", {}) if schema.get("type") == "array" else schema
        assert _valid(item_schema, value), f"{what}: {name}={value!r} does not fit {schema}"
        if name == "expand":
            documented = set(re.findall(r"`(\w+)`", declared[name].get("description", "")))
            assert set(value.split(",")) <= documented, f"{what}: expand {value!r} not among {documented}"
    assert request.content in (b"", None), f"{what}: a GET with a body"
    return template


def test_every_permission_request_is_in_the_spec(spec: dict[str, Any]) -> None:
    fx = generate_permission_fixture()
    sent: list[httpx.Request] = []
    with httpx.Client(
        transport=permission_transport(fx),
        base_url="https://sample.atlassian.net",
        event_hooks={"request": [sent.append]},
    ) as http:
        client = JiraClient(http=http, tenant_id="acme", site="https://sample.atlassian.net")
        projects = [{"id": p["id"], "key": p["key"], "lead": {"accountId": p["lead"]}} for p in fx.projects]
        fetch_permissions(client, projects, [issue_facts_from_json(i) for i in fx.issues])
    templates = {check_request(spec, request) for request in sent}
    # every endpoint of the fetcher was exercised
    assert templates == {
        "/rest/api/3/project/{projectKeyOrId}/permissionscheme",
        "/rest/api/3/permissionscheme/{schemeId}",
        "/rest/api/3/project/{projectIdOrKey}/role/{id}",
        "/rest/api/3/project/{projectKeyOrId}/issuesecuritylevelscheme",
        "/rest/api/3/issuesecurityschemes/level/member",
        "/rest/api/3/applicationrole",
        "/rest/api/3/group/member",
        "/rest/api/3/users/search",
    }


def test_check_request_rejects_what_the_spec_does_not_allow(spec: dict[str, Any]) -> None:
    """The checker can fail: an unknown parameter, a bad integer, an undocumented expand."""
    bad = [
        httpx.Request("GET", "https://x/rest/api/3/group/member?groupId=g&pageSize=5"),
        httpx.Request("GET", "https://x/rest/api/3/group/member?groupId=g&startAt=first"),
        httpx.Request("GET", "https://x/rest/api/3/permissionscheme/1000?expand=everything"),
        httpx.Request("GET", "https://x/rest/api/3/permissionscheme/abc"),
        httpx.Request("GET", "https://x/rest/api/3/project/ENG/permissionschemes"),
    ]
    for request in bad:
        with pytest.raises(AssertionError):
            check_request(spec, request)


def _props(schemas: dict[str, Any], name: str) -> set[str]:
    schema = schemas[name]
    props = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        if part.get("$ref"):
            props |= _props(schemas, part["$ref"].rsplit("/", 1)[1])
    return props


def test_fixture_answers_use_the_spec_schemas(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    fx = generate_permission_fixture()
    with httpx.Client(transport=permission_transport(fx), base_url="https://sample.atlassian.net") as http:
        scheme = http.get("/rest/api/3/permissionscheme/1001", params={"expand": "permissions"}).json()
        role = http.get("/rest/api/3/project/ENG/role/10002").json()
        security = http.get("/rest/api/3/project/ENG/issuesecuritylevelscheme").json()
        members = http.get("/rest/api/3/issuesecurityschemes/level/member", params={"schemeId": "2000"}).json()
        group = http.get("/rest/api/3/group/member", params={"groupId": "gid-eng"}).json()
        app_roles = http.get("/rest/api/3/applicationrole").json()
    assert set(scheme) <= _props(schemas, "PermissionScheme")
    assert {k for g in scheme["permissions"] for k in g} <= _props(schemas, "PermissionGrant")
    assert {k for g in scheme["permissions"] for k in g["holder"]} <= _props(schemas, "PermissionHolder")
    assert set(role) <= _props(schemas, "ProjectRole")
    assert {k for a in role["actors"] for k in a} <= _props(schemas, "RoleActor")
    assert set(security) <= _props(schemas, "SecurityScheme")
    assert {k for lv in security["levels"] for k in lv} <= _props(schemas, "SecurityLevel")
    assert set(members) <= _props(schemas, "PageBeanSecurityLevelMember")
    assert {k for m in members["values"] for k in m} <= _props(schemas, "SecurityLevelMember")
    assert set(group) <= _props(schemas, "PageBeanUserDetails")
    assert {k for u in group["values"] for k in u} <= _props(schemas, "UserDetails")
    assert {k for r in app_roles for k in r} <= _props(schemas, "ApplicationRole")
