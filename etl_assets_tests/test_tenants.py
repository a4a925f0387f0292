"""The tenant registry: parsing, a strict schema, errors at file:line, credentials by variable name."""

from pathlib import Path

import pytest

from etl_assets.core.errors import ConfigError
from etl_assets.core.sources.jira.source import KEYS as JIRA_KEYS
from etl_assets.core.sources.jira.source import jira_site
from etl_assets.core.tenants import (
    BUNDLED_TENANTS_FILE,
    TenantConfigError,
    TenantRegistry,
    UnknownTenantError,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def refused(path: Path) -> str:
    """The message loading ``path`` is refused with, checked to be one line naming the file."""
    with pytest.raises(TenantConfigError) as err:
        TenantRegistry.load(path)
    message = str(err.value)
    assert isinstance(err.value, ConfigError)
    assert "\n" not in message, message
    assert message.startswith(str(path)), message
    return message


def test_bundled_registry_defines_sample_tenants():
    registry = TenantRegistry.load(BUNDLED_TENANTS_FILE)
    assert registry.ids == ["1", "2"]
    assert all(t.section("jira").is_sample for t in registry.tenants)
    assert jira_site(registry.get("1")).credentials("1") is None


def test_live_tenant_reads_credentials_from_named_variables(tmp_path):
    path = write(
        tmp_path,
        """
tenants:
  - id: acme-1
    name: Acme
    jira: {url: "https://acme.atlassian.net/", email_env: ACME_EMAIL, token_env: ACME_TOKEN, projects: [ABC], jql: "x = 1"}
""",
    )
    tenant = TenantRegistry.load(path).get("acme-1")
    assert (tenant.name, tenant.section("jira").url, tenant.section("jira").projects, tenant.section("jira").jql) == (
        "Acme",
        "https://acme.atlassian.net",
        ("ABC",),
        "x = 1",
    )
    site = jira_site(tenant)
    assert site.credentials(tenant.id, {"ACME_EMAIL": "a@b.c", "ACME_TOKEN": "tok"}) == ("a@b.c", "tok")
    with pytest.raises(TenantConfigError) as err:
        site.credentials(tenant.id, {"ACME_EMAIL": "a@b.c"})
    assert "ACME_TOKEN" in str(err.value) and "acme-1" in str(err.value) and "\n" not in str(err.value)


def test_a_misspelt_key_is_refused_at_its_line_listing_the_allowed_keys(tmp_path):
    path = write(
        tmp_path,
        """# our tenants
tenants:
  - id: acme
    name: Acme
    jira:
      url: https://acme.atlassian.net
      projets: [ABC]
      email_env: ACME_EMAIL
      token_env: ACME_TOKEN
""",
    )
    assert refused(path) == (
        f"{path} line 7: unknown key 'projets' under jira (allowed: url, email_env, token_env, projects, jql, custom_fields)"
    )
    assert JIRA_KEYS == ("url", "email_env", "token_env", "projects", "jql", "custom_fields")


@pytest.mark.parametrize(
    ("body", "line", "expected"),
    [
        # unknown keys, at every level
        (
            "tenants:\n  - id: a\n    jira: {url: sample://x}\n    colour: red\n",
            4,
            "unknown key 'colour' under tenants[0] (allowed: id, name, jira, github)",
        ),
        (
            "tenants:\n  - id: a\n    jira: {url: sample://x}\nextra: {}\n",
            4,
            "unknown key 'extra' under the top level (allowed: tenants)",
        ),
        # ids
        (
            "tenants:\n  - id: a\n    jira: {url: sample://x}\n  - id: 'a b'\n    jira: {url: sample://x}\n",
            4,
            "tenants[1].id: 'a b' is not a valid tenant id",
        ),
        (
            "tenants:\n  - id: '../x'\n    jira: {url: sample://x}\n",
            2,
            "tenants[0].id: '../x' is not a valid tenant id",
        ),
        ("tenants:\n  - name: no id\n    jira: {url: sample://x}\n", 2, "tenants[0].id: must be a string"),
        (
            "tenants:\n  - id: a\n    jira: {url: sample://x}\n\n  - id: a\n    jira: {url: sample://y}\n",
            5,
            "tenant id 'a' appears twice",
        ),
        (
            "tenants:\n  - id: acme\n    jira: {url: sample://x}\n  - id: ACME\n    jira: {url: sample://y}\n",
            4,
            "differ only by case",
        ),
        # the jira section
        ("tenants:\n  - id: a\n    name: A\n", 2, "tenant 'a': a 'jira' mapping with at least 'url' is required"),
        ("tenants:\n  - id: a\n    jira:\n      email_env: E\n", 3, "tenant 'a': jira.url is required"),
        (
            "tenants:\n  - id: ok\n    jira:\n      url: 'ftp://x'\n",
            4,
            "tenant 'ok': jira.url 'ftp://x' is not allowed: use an http(s) URL",
        ),
        (
            "tenants:\n  - id: ok\n    jira: {url: 'https://x.atlassian.net'}\n",
            3,
            "jira.email_env and jira.token_env are required",
        ),
        (
            "tenants:\n  - id: ok\n    jira:\n      url: sample://x\n      projects: ABC\n",
            5,
            "jira.projects must be a list of project keys",
        ),
        ("tenants:\n  - id: ok\n    jira:\n      url: sample://x\n      jql: [a]\n", 5, "jira.jql must be a string"),
        # the file's shape
        ("- id: a\n", 1, "expected a mapping with a top-level 'tenants:' list, got a list"),
        ("nothing: here\n", 1, "expected a top-level 'tenants:' list of tenants, got no 'tenants' key"),
        ("\n\ntenants:\n  id: a\n", 3, "expected a top-level 'tenants:' list of tenants, got a mapping"),
        ("tenants:\n  - 5\n", 2, "tenants[0] must be a mapping with id, name and jira, got int"),
        ("tenants: []\n", 1, "the 'tenants:' list is empty"),
        (
            "tenants:\n  - id: a\n    jira: {url: sample://x}\n    id: b\n",
            4,
            "key 'id' appears twice under tenants[0] (first on line 2)",
        ),
        ("tenants: [\n  - id: 1\n", 2, "not valid YAML"),
        ("tenants:\n\t- id: 1\n", 2, "not valid YAML"),
    ],
)
def test_every_tenant_error_names_the_file_and_line(tmp_path, body, line, expected):
    path = write(tmp_path, body)
    message = refused(path)
    assert message.startswith(f"{path} line {line}: "), message
    assert expected in message, message


def test_errors_never_echo_a_secret_written_into_the_file(tmp_path):
    path = write(
        tmp_path,
        "tenants:\n  - id: a\n    jira:\n      url: https://x.atlassian.net\n      email_env: E\n"
        "      token_env: 'ATATT3xFfGF0-s3cr3t!'\n",
    )
    message = refused(path)
    assert message.startswith(f"{path} line 6: tenant 'a': jira.token_env must be the NAME of an environment variable")
    assert "s3cr3t" not in message
    path = write(tmp_path, "tenants:\n  - id: a\n    jira: {url: 'bot:hunter2@acme', email_env: E, token_env: T}\n")
    assert "hunter2" not in refused(path)


def test_yaml_merge_keys_are_read_like_any_other(tmp_path):
    path = write(
        tmp_path,
        """
tenants:
  - id: a
    jira: &site {url: "https://acme.atlassian.net", email_env: E, token_env: T}
  - id: b
    jira: {<<: *site, projects: [OPS]}
""",
    )
    b = TenantRegistry.load(path).get("b")
    assert (b.section("jira").url, b.section("jira").token_env, b.section("jira").projects) == (
        "https://acme.atlassian.net",
        "T",
        ("OPS",),
    )


def test_a_mapping_in_memory_is_held_to_the_same_schema():
    with pytest.raises(TenantConfigError) as err:
        TenantRegistry.from_mapping(
            {"tenants": [{"id": "a", "jira": {"url": "sample://x", "projets": ["A"]}}]}, source="test"
        )
    assert (
        str(err.value)
        == "test: unknown key 'projets' under jira (allowed: url, email_env, token_env, projects, jql, custom_fields)"
    )


def test_unknown_tenant_lists_known_ones():
    registry = TenantRegistry.load(BUNDLED_TENANTS_FILE)
    with pytest.raises(UnknownTenantError) as err:
        registry.get("nope")
    assert "'nope'" in str(err.value) and "1, 2" in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(TenantConfigError) as err:
        TenantRegistry.load(tmp_path / "absent.yaml")
    assert (
        str(err.value)
        == f"tenants file {tmp_path / 'absent.yaml'}: cannot be read (No such file or directory); set ETL_TENANTS_FILE"
    )


def test_a_new_source_brings_its_own_section_and_the_registry_reads_it_unchanged():
    """A source is added by declaring it: its keys, its parser and its client opener live in its
    package; the registry learns its section from the declaration alone."""
    from contextlib import nullcontext
    from dataclasses import dataclass

    from etl_assets.core.catalogue import SOURCES
    from etl_assets.core.source_api import Section, Source

    @dataclass(frozen=True)
    class Wiki:
        url: str
        space: str

        @property
        def is_sample(self) -> bool:
            return False

        def secret_envs(self) -> tuple[str, ...]:
            return ()

    def parse(section: Section) -> Wiki:
        section.check_keys(("url", "space"))
        space = section.raw.get("space")
        if not isinstance(space, str):
            raise section.error("space", "wiki.space must be a space key")
        return Wiki(section.url("url", "an http(s) URL"), space)

    wiki = Source(name="wiki", title="Wiki", parse=parse, open_client=lambda *_: nullcontext())
    data = {
        "tenants": [
            {"id": "a", "jira": {"url": "sample://x"}, "wiki": {"url": "https://w.example/", "space": "ENG"}},
            {"id": "b", "jira": {"url": "sample://y"}},
            {"id": "c", "jira": {"url": "sample://z"}, "wiki": {"url": "https://w.example", "spaces": ["ENG"]}},
        ]
    }
    ok = TenantRegistry.from_mapping({"tenants": data["tenants"][:2]}, sources=(*SOURCES, wiki))
    assert ok.get("a").section("wiki") == Wiki("https://w.example", "ENG")
    assert ok.get("b").section("wiki") is None and ok.get("b").section("jira") is not None
    with pytest.raises(TenantConfigError, match="unknown key 'spaces' under wiki"):
        TenantRegistry.from_mapping(data, sources=(*SOURCES, wiki))
    # Without the declaration the same file is refused: the registry knows only declared sources.
    with pytest.raises(TenantConfigError, match="unknown key 'wiki' under tenants\\[0\\]"):
        TenantRegistry.from_mapping(data)
