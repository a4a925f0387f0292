"""Jira as the house sees it: the tenants file's ``jira:`` section and a client per tenant."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from etl_assets.core.source_api import ClientOptions, Section, Source, TenantConfigError, is_sample_url, kind_of

if TYPE_CHECKING:
    from etl_assets.core.tenants import Tenant

KEYS = ("url", "email_env", "token_env", "projects", "jql", "custom_fields")


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
        return is_sample_url(self.url)

    def secret_envs(self) -> tuple[str, ...]:
        """The variables holding secrets (the doctor scrubs their values from what it prints)."""
        return (self.token_env,) if self.token_env else ()

    def credentials(self, tenant_id: str, environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
        """(email, token) read from the environment variables the registry names.

        Returns None for sample sites. Raises TenantConfigError naming the variable (never its
        value) when one is missing.
        """
        if self.is_sample:
            return None
        env = os.environ if environ is None else environ
        email_env, token_env = self.email_env, self.token_env
        missing = [n for n in (email_env, token_env) if not n or not env.get(n)]
        if missing or not email_env or not token_env:
            names = ", ".join(n or "<unset>" for n in missing)
            raise TenantConfigError(
                f"tenant {tenant_id!r}: Jira credentials missing: set environment variable(s) {names} "
                f"(named by jira.email_env / jira.token_env in the tenants file)"
            )
        return env[email_env], env[token_env]


def jira_site(tenant: Tenant) -> JiraSiteConfig:
    """The tenant's Jira site (every tenant has one: the registry requires the section)."""
    site = tenant.section("jira")
    if not isinstance(site, JiraSiteConfig):
        raise TenantConfigError(f"tenant {tenant.id!r}: no Jira site configured (the tenants file's jira: section)")
    return site


def parse_section(section: Section) -> JiraSiteConfig:
    section.check_keys(KEYS)
    raw = section.raw
    url = section.url("url", "an http(s) URL, or sample://NAME for the bundled demo site")
    projects = raw.get("projects") or ()
    if not isinstance(projects, list | tuple) or not all(isinstance(p, str) and p for p in projects):
        raise section.error("projects", "jira.projects must be a list of project keys")
    jql = raw.get("jql")
    if jql is not None and not isinstance(jql, str):
        raise section.error("jql", f"jira.jql must be a string, got {kind_of(jql)}")
    custom = raw.get("custom_fields") or ()
    if not isinstance(custom, list | tuple) or not all(isinstance(c, str) and c.strip() for c in custom):
        raise section.error(
            "custom_fields",
            'jira.custom_fields must be a list of field names or ids (e.g. ["Story Points", "customfield_10031"])',
        )
    site = JiraSiteConfig(
        url=url,
        email_env=section.env_name("email_env"),
        token_env=section.env_name("token_env"),
        projects=tuple(projects),
        jql=jql or None,
        custom_fields=tuple(c.strip() for c in custom),
    )
    if not site.is_sample and not (site.email_env and site.token_env):
        raise section.error(None, "jira.email_env and jira.token_env are required for a live site")
    return site


@contextmanager
def open_client(tenant_id: str, site: JiraSiteConfig, options: ClientOptions) -> Iterator[object]:
    """A client for the tenant's site; its connection pool is closed when the block ends."""
    from etl_assets.core.sources.jira.client import JiraClient

    headers = {"Accept": "application/json", "User-Agent": "etl-assets"}
    timeout = httpx.Timeout(options.timeout_s, connect=options.connect_timeout_s)
    if site.is_sample:
        from etl_assets.core.sources.jira.sample import sample_site_for, sample_transport

        sample = sample_site_for(site.url)
        http = httpx.Client(
            base_url=sample.base_url, transport=sample_transport(sample), headers=headers, timeout=timeout
        )
    else:
        email, token = site.credentials(tenant_id)  # type: ignore[misc]
        http = httpx.Client(base_url=site.url, auth=httpx.BasicAuth(email, token), headers=headers, timeout=timeout)
    try:
        yield JiraClient(
            http=http,
            tenant_id=tenant_id,
            site=site.url.split("?")[0],
            max_attempts=options.max_attempts,
            max_wait_s=options.max_wait_s,
        )
    finally:
        http.close()


JIRA = Source(
    name="jira",
    title="Jira",
    parse=parse_section,
    open_client=open_client,
    required=True,  # a tenant is a Jira site: its partitions, projects and permissions come from there
    holds="at least 'url'",
)
