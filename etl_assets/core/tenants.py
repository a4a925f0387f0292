"""The tenant registry: which Jira sites we sync, read from a YAML file.

Tenant ids become Qdrant collection names and Dagster partition keys, so they are
validated strictly. The file names environment variables for credentials, never the
secrets themselves.

The schema is strict: a key the registry does not know is refused (a misspelt
``projets:`` would otherwise sync every project), and every error names the file and the
line it is on. Sources and features add their keys here (``custom_fields``, ``permissions``,
a ``github`` section) together with the code that reads them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from etl_assets.core.errors import ConfigError
from etl_assets.core.settings import BUNDLED_TENANTS_FILE as BUNDLED_TENANTS_FILE
from etl_assets.core.settings import Settings

TENANT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,48}$")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SAMPLE_SCHEME = "sample"

# The keys each level accepts, in the order the messages list them.
TOP_KEYS = ("tenants",)
TENANT_KEYS = ("id", "name", "jira", "github")
JIRA_KEYS = ("url", "email_env", "token_env", "projects", "jql", "custom_fields")
GITHUB_KEYS = ("url", "token_env", "org", "repos")
GITHUB_API_URL = "https://api.github.com"
REPO_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")

DocPath = tuple[str | int, ...]  # where a value sits in the file: ("tenants", 0, "jira", "url")


class TenantConfigError(ConfigError):
    """The tenants file or one tenant in it is invalid; the message names the file, line and key."""


class UnknownTenantError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its argument; we want a sentence
        return str(self.args[0])


@dataclass(frozen=True)
class JiraSiteConfig:
    url: str
    email_env: str | None = None
    token_env: str | None = None
    projects: tuple[str, ...] = ()
    jql: str | None = None
    # Custom fields to index, by name ("Story Points") or id ("customfield_10031"); resolved to ids
    # with GET /rest/api/3/field at fetch time (see sources/jira/custom_fields.py).
    custom_fields: tuple[str, ...] = ()

    @property
    def is_sample(self) -> bool:
        return urlsplit(self.url).scheme == SAMPLE_SCHEME


@dataclass(frozen=True)
class GitHubConfig:
    """A tenant's GitHub: an organisation and/or explicit ``owner/repo`` names, on github.com or an
    Enterprise server (``url`` is the REST API root, e.g. ``https://ghe.example.com/api/v3``)."""

    url: str = GITHUB_API_URL
    token_env: str | None = None
    org: str | None = None
    repos: tuple[str, ...] = ()

    @property
    def is_sample(self) -> bool:
        return urlsplit(self.url).scheme == SAMPLE_SCHEME

    def token(self, tenant_id: str, environ: Mapping[str, str] | None = None) -> str | None:
        """The token from the variable the registry names (None for a sample org); the message names
        the variable, never a value."""
        if self.is_sample:
            return None
        env = os.environ if environ is None else environ
        if not self.token_env or not env.get(self.token_env):
            raise TenantConfigError(
                f"tenant {tenant_id!r}: GitHub token missing: set environment variable "
                f"{self.token_env or '<unset>'} (named by github.token_env in the tenants file)"
            )
        return env[self.token_env]


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    jira: JiraSiteConfig
    github: GitHubConfig | None = None

    def credentials(self, environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
        """(email, token) read from the environment variables the registry names.

        Returns None for sample sites. Raises TenantConfigError naming the variable (never its
        value) when one is missing.
        """
        if self.jira.is_sample:
            return None
        env = os.environ if environ is None else environ
        email_env, token_env = self.jira.email_env, self.jira.token_env
        missing = [n for n in (email_env, token_env) if not n or not env.get(n)]
        if missing or not email_env or not token_env:
            names = ", ".join(n or "<unset>" for n in missing)
            raise TenantConfigError(
                f"tenant {self.id!r}: Jira credentials missing: set environment variable(s) {names} "
                f"(named by jira.email_env / jira.token_env in the tenants file)"
            )
        return env[email_env], env[token_env]


def validate_tenant_id(value: object, *, where: str = "tenant id") -> str:
    """``value`` as a tenant id, or TenantConfigError: ids become collection names and partition keys."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise TenantConfigError(f"{where}: must be a string of letters, digits, '_' or '-', got {_kind(value)}")
    text = str(value)
    if not TENANT_ID_PATTERN.fullmatch(text):
        raise TenantConfigError(
            f"{where}: {text!r} is not a valid tenant id (1-48 letters, digits, '_' or '-'; "
            "it becomes part of Qdrant collection names)"
        )
    return text


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", type(None): "nothing"}.get(type(value), type(value).__name__)


def _dotted(path: DocPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


_USERINFO = re.compile(r"[^/@\s]+@")


@dataclass(frozen=True)
class _Located:
    """Turns a path in the document into ``<file> line <n>`` (just ``<file>`` for a mapping in memory)."""

    source: str
    lines: Mapping[DocPath, int]

    def at(self, path: DocPath) -> str:
        while path and path not in self.lines:  # a missing key: the line of what holds it
            path = path[:-1]
        line = self.lines.get(path)
        return f"{self.source} line {line}" if line else self.source

    def error(self, path: DocPath, message: str) -> TenantConfigError:
        return TenantConfigError(f"{self.at(path)}: {message}")

    def check_keys(self, raw: Mapping[Any, Any], path: DocPath, allowed: tuple[str, ...], under: str) -> None:
        for key in raw:
            if key not in allowed:
                raise self.error(
                    (*path, key), f"unknown key {str(key)!r} under {under} (allowed: {', '.join(allowed)})"
                )


def _parse_url(value: object, path: DocPath, where: _Located, tenant: str) -> str:
    allowed = "an http(s) URL, or sample://NAME for the bundled demo site"
    if value is None or (isinstance(value, str) and not value.strip()):
        raise where.error(path, f"tenant {tenant!r}: jira.url is required ({allowed})")
    if not isinstance(value, str):
        raise where.error(path, f"tenant {tenant!r}: jira.url must be {allowed}, got {_kind(value)}")
    text = value.strip()
    parts = urlsplit(text)
    if parts.scheme == SAMPLE_SCHEME and parts.netloc:
        return text
    if parts.scheme not in ("http", "https") or not parts.netloc:
        shown = _USERINFO.sub("***@", text)  # never echo a password someone put in the URL
        raise where.error(path, f"tenant {tenant!r}: jira.url {shown!r} is not allowed: use {allowed}")
    return text.rstrip("/")


def _parse_tenant(raw: object, index: int, where: _Located) -> Tenant:
    path: DocPath = ("tenants", index)
    if not isinstance(raw, dict):
        raise where.error(path, f"tenants[{index}] must be a mapping with id, name and jira, got {_kind(raw)}")
    where.check_keys(raw, path, TENANT_KEYS, f"tenants[{index}]")
    tenant_id = validate_tenant_id(raw.get("id"), where=f"{where.at((*path, 'id'))}: tenants[{index}].id")
    name = raw.get("name")
    if name is not None and not isinstance(name, str | int | float):
        raise where.error((*path, "name"), f"tenant {tenant_id!r}: name must be text, got {_kind(name)}")
    jira_path = (*path, "jira")
    jira = raw.get("jira")
    if not isinstance(jira, dict):
        raise where.error(
            jira_path, f"tenant {tenant_id!r}: a 'jira' mapping with at least 'url' is required, got {_kind(jira)}"
        )
    where.check_keys(jira, jira_path, JIRA_KEYS, "jira")
    url = _parse_url(jira.get("url"), (*jira_path, "url"), where, tenant_id)
    projects = jira.get("projects") or ()
    if not isinstance(projects, list | tuple) or not all(isinstance(p, str) and p for p in projects):
        raise where.error(
            (*jira_path, "projects"), f"tenant {tenant_id!r}: jira.projects must be a list of project keys"
        )
    jql = jira.get("jql")
    if jql is not None and not isinstance(jql, str):
        raise where.error((*jira_path, "jql"), f"tenant {tenant_id!r}: jira.jql must be a string, got {_kind(jql)}")
    custom = jira.get("custom_fields") or ()
    if not isinstance(custom, list | tuple) or not all(isinstance(c, str) and c.strip() for c in custom):
        raise where.error(
            (*jira_path, "custom_fields"),
            f"tenant {tenant_id!r}: jira.custom_fields must be a list of field names or ids "
            '(e.g. ["Story Points", "customfield_10031"])',
        )
    for key in ("email_env", "token_env"):
        value = jira.get(key)
        if value is not None and not (isinstance(value, str) and ENV_NAME_PATTERN.fullmatch(value)):
            # The value is not echoed: a secret pasted here instead of a variable name must not be printed.
            raise where.error(
                (*jira_path, key),
                f"tenant {tenant_id!r}: jira.{key} must be the NAME of an environment variable "
                "(letters, digits and '_'), not its value",
            )
    site = JiraSiteConfig(
        url=url,
        email_env=jira.get("email_env"),
        token_env=jira.get("token_env"),
        projects=tuple(projects),
        jql=jql or None,
        custom_fields=tuple(c.strip() for c in custom),
    )
    if not site.is_sample and not (site.email_env and site.token_env):
        raise where.error(
            jira_path, f"tenant {tenant_id!r}: jira.email_env and jira.token_env are required for a live site"
        )
    github = _parse_github(raw.get("github"), (*path, "github"), where, tenant_id) if "github" in raw else None
    return Tenant(id=tenant_id, name=str(name) if name is not None else tenant_id, jira=site, github=github)


def _parse_github(raw: object, path: DocPath, where: _Located, tenant: str) -> GitHubConfig:
    if not isinstance(raw, dict):
        raise where.error(
            path, f"tenant {tenant!r}: 'github' must be a mapping with org and/or repos, got {_kind(raw)}"
        )
    where.check_keys(raw, path, GITHUB_KEYS, "github")
    url = raw.get("url", GITHUB_API_URL)
    if not isinstance(url, str) or not url.strip():
        raise where.error((*path, "url"), f"tenant {tenant!r}: github.url must be a URL, got {_kind(url)}")
    parts = urlsplit(url.strip())
    if not (parts.scheme == SAMPLE_SCHEME and parts.netloc) and (
        parts.scheme not in ("http", "https") or not parts.netloc
    ):
        shown = _USERINFO.sub("***@", url)
        raise where.error(
            (*path, "url"),
            f"tenant {tenant!r}: github.url {shown!r} is not allowed: use the REST API root "
            "(https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise) or sample://NAME",
        )
    org = raw.get("org")
    if org is not None and not (isinstance(org, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", org)):
        raise where.error((*path, "org"), f"tenant {tenant!r}: github.org must be an organisation login")
    repos = raw.get("repos") or []
    if not isinstance(repos, list) or not all(isinstance(r, str) and REPO_PATTERN.fullmatch(r) for r in repos):
        raise where.error((*path, "repos"), f"tenant {tenant!r}: github.repos must be a list of 'owner/repo' names")
    if not org and not repos:
        raise where.error(path, f"tenant {tenant!r}: github needs an org or a list of repos (owner/repo)")
    token_env = raw.get("token_env")
    if token_env is not None and not (isinstance(token_env, str) and ENV_NAME_PATTERN.fullmatch(token_env)):
        raise where.error(
            (*path, "token_env"),
            f"tenant {tenant!r}: github.token_env must be the NAME of an environment variable "
            "(letters, digits and '_'), not its value",
        )
    config = GitHubConfig(url=url.strip().rstrip("/"), token_env=token_env, org=org, repos=tuple(repos))
    if not config.is_sample and not token_env:
        raise where.error(path, f"tenant {tenant!r}: github.token_env is required for a live GitHub")
    return config


def _lines(loader: yaml.SafeLoader, node: yaml.Node, source: str, path: DocPath = ()) -> dict[DocPath, int]:
    """Path -> 1-based line of every key and list item under ``node``; refuses a key given twice."""
    out: dict[DocPath, int] = {}
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolve `<<: *anchor` merges, as loading does
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                # YAML keeps the last one silently: the first would be ignored without a word.
                raise TenantConfigError(
                    f"{source} line {line}: key {key_node.value!r} appears twice under "
                    f"{_dotted(path) or 'the top level'} (first on line {seen[key_node.value]})"
                )
            seen[key_node.value] = line
            out[(*path, key_node.value)] = line
            out.update(_lines(loader, value_node, source, (*path, key_node.value)))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out[(*path, index)] = item.start_mark.line + 1
            out.update(_lines(loader, item, source, (*path, index)))
    return out


def _read_yaml(text: str, source: str) -> tuple[object, dict[DocPath, int]]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines = {(): node.start_mark.line + 1, **_lines(loader, node, source)}
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" line {mark.line + 1}" if mark else ""
        # Only the parser's sentence, not its excerpt of the file (which could hold anything).
        problem = " ".join(str(exc.problem or exc.context or "cannot be parsed").split())
        raise TenantConfigError(f"{source}{line}: not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise TenantConfigError(f"{source}: not valid YAML: {type(exc).__name__}") from None
    finally:
        loader.dispose()


@dataclass(frozen=True)
class TenantRegistry:
    tenants: tuple[Tenant, ...]
    source: str = "<memory>"

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.tenants]

    def get(self, tenant_id: str) -> Tenant:
        for tenant in self.tenants:
            if tenant.id == tenant_id:
                return tenant
        raise UnknownTenantError(
            f"unknown tenant {tenant_id!r}: {self.source} defines {', '.join(self.ids) or 'no tenants'}"
        )

    @classmethod
    def from_mapping(
        cls, data: object, source: str = "<memory>", lines: Mapping[DocPath, int] | None = None
    ) -> TenantRegistry:
        """The registry ``data`` describes; ``lines`` (path -> line) places errors in the file it came from."""
        where = _Located(source, lines or {})
        if not isinstance(data, dict):
            raise where.error((), f"expected a mapping with a top-level 'tenants:' list, got {_kind(data)}")
        if not isinstance(data.get("tenants"), list):
            got = _kind(data["tenants"]) if "tenants" in data else "no 'tenants' key"
            raise where.error(("tenants",), f"expected a top-level 'tenants:' list of tenants, got {got}")
        where.check_keys(data, (), TOP_KEYS, "the top level")
        tenants = tuple(_parse_tenant(raw, i, where) for i, raw in enumerate(data["tenants"]))
        seen: dict[str, str] = {}  # lower-cased id -> id
        for index, tenant in enumerate(tenants):
            other = seen.get(tenant.id.lower())
            at = ("tenants", index, "id")
            if other == tenant.id:
                raise where.error(at, f"tenant id {tenant.id!r} appears twice")
            if other is not None:
                # Qdrant's local mode keeps a folder per collection: on a case-insensitive file
                # system the two tenants would share their collections.
                raise where.error(
                    at,
                    f"tenant ids {other!r} and {tenant.id!r} differ only by case; "
                    "collection names must not depend on case",
                )
            seen[tenant.id.lower()] = tenant.id
        if not tenants:
            raise where.error(("tenants",), "the 'tenants:' list is empty: add at least one tenant")
        return cls(tenants=tenants, source=source)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> TenantRegistry:
        """Read the registry from ``path``, else the settings' ``ETL_TENANTS_FILE`` (default: the bundled demo)."""
        chosen = Path(path) if path else Settings.load().tenants_file
        try:
            text = chosen.read_text(encoding="utf-8")
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise TenantConfigError(f"tenants file {chosen}: cannot be read ({reason}); set ETL_TENANTS_FILE") from None
        except UnicodeDecodeError:
            raise TenantConfigError(f"tenants file {chosen}: not UTF-8 text") from None
        data, lines = _read_yaml(text, str(chosen))
        return cls.from_mapping(data, source=str(chosen), lines=lines)
