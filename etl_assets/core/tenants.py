"""The tenant registry: which Jira sites we sync, read from a YAML file.

Tenant ids become Qdrant collection names and Dagster partition keys, so they are
validated strictly. The file names environment variables for credentials, never the
secrets themselves.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from etl_assets.core.errors import ConfigError

TENANT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,48}$")
BUNDLED_TENANTS_FILE = Path(__file__).resolve().parent.parent / "tenants.yaml"
SAMPLE_SCHEME = "sample"


class TenantConfigError(ConfigError):
    """The tenants file or one tenant in it is invalid; the message names which."""


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

    @property
    def is_sample(self) -> bool:
        return urlsplit(self.url).scheme == SAMPLE_SCHEME


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    jira: JiraSiteConfig
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def credentials(self, environ: os._Environ[str] | dict[str, str] | None = None) -> tuple[str, str] | None:
        """(email, token) read from the environment variables the registry names.

        Returns None for sample sites. Raises TenantConfigError naming the variable (never its
        value) when one is missing.
        """
        if self.jira.is_sample:
            return None
        env = os.environ if environ is None else environ
        missing = [n for n in (self.jira.email_env, self.jira.token_env) if not n or not env.get(n)]
        if missing:
            names = ", ".join(n or "<unset>" for n in missing)
            raise TenantConfigError(
                f"tenant {self.id!r}: Jira credentials missing: set environment variable(s) {names} "
                f"(named by jira.email_env / jira.token_env in the tenants file)"
            )
        return env[self.jira.email_env], env[self.jira.token_env]  # type: ignore[index]


def validate_tenant_id(value: object, *, where: str = "tenant id") -> str:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise TenantConfigError(f"{where}: must be a string, got {type(value).__name__}")
    text = str(value)
    if not TENANT_ID_PATTERN.fullmatch(text):
        raise TenantConfigError(
            f"{where}: {text!r} is not a valid tenant id (1-48 letters, digits, '_' or '-'; "
            "it becomes part of Qdrant collection names)"
        )
    return text


def _parse_url(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TenantConfigError(f"{where}: jira.url is required")
    parts = urlsplit(value.strip())
    if parts.scheme == SAMPLE_SCHEME and parts.netloc:
        return value.strip()
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TenantConfigError(
            f"{where}: jira.url {value!r} is not an http(s) URL (or sample://NAME for the bundled demo site)"
        )
    return value.strip().rstrip("/")


def _parse_tenant(raw: object, index: int, source: str) -> Tenant:
    where = f"{source}: tenants[{index}]"
    if not isinstance(raw, dict):
        raise TenantConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    tenant_id = validate_tenant_id(raw.get("id"), where=f"{where}.id")
    where = f"{source}: tenant {tenant_id!r}"
    jira = raw.get("jira")
    if not isinstance(jira, dict):
        raise TenantConfigError(f"{where}: a 'jira' mapping with at least 'url' is required")
    url = _parse_url(jira.get("url"), where)
    projects = jira.get("projects") or ()
    if not isinstance(projects, list | tuple) or not all(isinstance(p, str) for p in projects):
        raise TenantConfigError(f"{where}: jira.projects must be a list of project keys")
    jql = jira.get("jql")
    if jql is not None and not isinstance(jql, str):
        raise TenantConfigError(f"{where}: jira.jql must be a string")
    for key in ("email_env", "token_env"):
        if jira.get(key) is not None and not isinstance(jira.get(key), str):
            raise TenantConfigError(f"{where}: jira.{key} must be the NAME of an environment variable")
    site = JiraSiteConfig(
        url=url,
        email_env=jira.get("email_env"),
        token_env=jira.get("token_env"),
        projects=tuple(projects),
        jql=jql or None,
    )
    if not site.is_sample and not (site.email_env and site.token_env):
        raise TenantConfigError(f"{where}: jira.email_env and jira.token_env are required for a live site")
    extra = {k: v for k, v in raw.items() if k not in ("id", "name", "jira")}
    return Tenant(id=tenant_id, name=str(raw.get("name") or tenant_id), jira=site, extra=extra)


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
    def from_mapping(cls, data: object, source: str = "<memory>") -> TenantRegistry:
        if not isinstance(data, dict) or not isinstance(data.get("tenants"), list):
            raise TenantConfigError(f"{source}: expected a top-level 'tenants:' list")
        tenants = tuple(_parse_tenant(raw, i, source) for i, raw in enumerate(data["tenants"]))
        seen: dict[str, str] = {}  # lower-cased id -> id
        for tenant in tenants:
            other = seen.get(tenant.id.lower())
            if other == tenant.id:
                raise TenantConfigError(f"{source}: tenant id {tenant.id!r} appears twice")
            if other is not None:
                # Qdrant's local mode keeps a folder per collection: on a case-insensitive file
                # system the two tenants would share their collections.
                raise TenantConfigError(
                    f"{source}: tenant ids {other!r} and {tenant.id!r} differ only by case; "
                    "collection names must not depend on case"
                )
            seen[tenant.id.lower()] = tenant.id
        if not tenants:
            raise TenantConfigError(f"{source}: the 'tenants:' list is empty")
        return cls(tenants=tenants, source=source)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> TenantRegistry:
        """Read the registry from ``path``, else ``ETL_TENANTS_FILE``, else the bundled demo file."""
        chosen = Path(path or os.environ.get("ETL_TENANTS_FILE") or BUNDLED_TENANTS_FILE)
        try:
            text = chosen.read_text(encoding="utf-8")
        except OSError as exc:
            raise TenantConfigError(f"tenants file {chosen}: cannot be read ({exc.strerror})") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TenantConfigError(f"tenants file {chosen}: not valid YAML ({exc})") from None
        return cls.from_mapping(data, source=str(chosen))
