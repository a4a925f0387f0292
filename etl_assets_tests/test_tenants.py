"""The tenant registry: parsing, validation and credentials by environment variable name."""

from pathlib import Path

import pytest

from etl_assets.core.tenants import BUNDLED_TENANTS_FILE, TenantConfigError, TenantRegistry, UnknownTenantError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_bundled_registry_defines_sample_tenants():
    registry = TenantRegistry.load(BUNDLED_TENANTS_FILE)
    assert registry.ids == ["1", "2"]
    assert all(t.jira.is_sample for t in registry.tenants)
    assert registry.get("1").credentials() is None


def test_live_tenant_reads_credentials_from_named_variables(tmp_path):
    path = write(
        tmp_path,
        """
tenants:
  - id: acme-1
    jira: {url: "https://acme.atlassian.net/", email_env: ACME_EMAIL, token_env: ACME_TOKEN, projects: [ABC]}
""",
    )
    tenant = TenantRegistry.load(path).get("acme-1")
    assert tenant.jira.url == "https://acme.atlassian.net"
    assert tenant.jira.projects == ("ABC",)
    assert tenant.credentials({"ACME_EMAIL": "a@b.c", "ACME_TOKEN": "tok"}) == ("a@b.c", "tok")
    with pytest.raises(TenantConfigError) as err:
        tenant.credentials({"ACME_EMAIL": "a@b.c"})
    assert "ACME_TOKEN" in str(err.value) and "acme-1" in str(err.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("tenants:\n  - id: 'a b'\n    jira: {url: sample://x}\n", "not a valid tenant id"),
        ("tenants:\n  - id: '../x'\n    jira: {url: sample://x}\n", "not a valid tenant id"),
        ("tenants:\n  - id: ok\n    jira: {url: 'ftp://x'}\n", "not an http(s) URL"),
        ("tenants:\n  - id: ok\n    jira: {url: 'https://x.atlassian.net'}\n", "email_env and jira.token_env"),
        ("tenants:\n  - id: a\n    jira: {url: sample://x}\n  - id: a\n    jira: {url: sample://y}\n", "appears twice"),
        ("tenants: [\n", "not valid YAML"),
        ("nothing: here\n", "top-level 'tenants:'"),
        ("tenants: []\n", "empty"),
    ],
)
def test_invalid_registries_name_the_problem(tmp_path, body, expected):
    path = write(tmp_path, body)
    with pytest.raises(TenantConfigError) as err:
        TenantRegistry.load(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_tenant_lists_known_ones():
    registry = TenantRegistry.load(BUNDLED_TENANTS_FILE)
    with pytest.raises(UnknownTenantError) as err:
        registry.get("nope")
    assert "'nope'" in str(err.value) and "1, 2" in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(TenantConfigError) as err:
        TenantRegistry.load(tmp_path / "absent.yaml")
    assert "absent.yaml" in str(err.value)
