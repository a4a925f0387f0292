"""GitHub as the house sees it: the tenants file's ``github:`` section and a client per tenant."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from etl_assets.core.source_api import ClientOptions, Section, Source, TenantConfigError, is_sample_url

KEYS = ("url", "token_env", "org", "repos")
API_URL = "https://api.github.com"
REPO_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class GitHubConfig:
    """A tenant's GitHub: an organisation and/or explicit ``owner/repo`` names, on github.com or an
    Enterprise server (``url`` is the REST API root, e.g. ``https://ghe.example.com/api/v3``)."""

    url: str = API_URL
    token_env: str | None = None
    org: str | None = None
    repos: tuple[str, ...] = ()

    @property
    def is_sample(self) -> bool:
        return is_sample_url(self.url)

    def secret_envs(self) -> tuple[str, ...]:
        """The variables holding secrets (the doctor scrubs their values from what it prints)."""
        return (self.token_env,) if self.token_env else ()

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


def parse_section(section: Section) -> GitHubConfig:
    section.check_keys(KEYS)
    raw = section.raw
    url = section.url(
        "url",
        "the REST API root (https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise) or sample://NAME",
        default=API_URL,
    )
    org = raw.get("org")
    if org is not None and not (isinstance(org, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", org)):
        raise section.error("org", "github.org must be an organisation login")
    repos = raw.get("repos") or []
    if not isinstance(repos, list) or not all(isinstance(r, str) and REPO_PATTERN.fullmatch(r) for r in repos):
        raise section.error("repos", "github.repos must be a list of 'owner/repo' names")
    if not org and not repos:
        raise section.error(None, "github needs an org or a list of repos (owner/repo)")
    config = GitHubConfig(url=url, token_env=section.env_name("token_env"), org=org, repos=tuple(repos))
    if not config.is_sample and not config.token_env:
        raise section.error(None, "github.token_env is required for a live GitHub")
    return config


@functools.cache
def _sample_org(url: str) -> Any:
    from etl_assets.core.sources.github.sample import generate_sample_org

    parts = urlsplit(url)
    q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return generate_sample_org(
        parts.netloc,
        seed=int(q.get("seed", 7)),
        n_repos=int(q.get("repos", 3)),
        n_items=int(q.get("items", 24)),
        n_comments=int(q.get("comments", 30)),
    )


@contextmanager
def open_client(tenant_id: str, config: GitHubConfig | None, options: ClientOptions) -> Iterator[object]:
    """A client for the tenant's GitHub; its connection pool is closed when the block ends. Conditional
    requests keep their ETags in the project's database (``github_http_cache``)."""
    from etl_assets.core.sources.github.client import API_VERSION, EtagCache, GitHubClient

    if config is None:  # a tenant without GitHub: a client that lists nothing and asks nothing
        with httpx.Client() as idle:
            yield GitHubClient(http=idle, tenant_id=tenant_id, api="(not configured)")
        return
    headers = {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": API_VERSION,
        "User-Agent": "etl-assets",
    }
    timeout = httpx.Timeout(options.timeout_s, connect=options.connect_timeout_s)
    token = config.token(tenant_id)
    if config.is_sample:
        from etl_assets.core.sources.github.sample import sample_transport

        site = _sample_org(config.url)
        http = httpx.Client(
            base_url=f"https://api.{site.org}.github.sample",
            transport=sample_transport(site),
            headers=headers,
            timeout=timeout,
            follow_redirects=True,
        )
    else:
        http = httpx.Client(
            base_url=config.url,
            headers={**headers, "Authorization": f"Bearer {token}"},
            timeout=timeout,
            follow_redirects=True,  # a renamed repository answers 301 to its new address
        )
    cache = None
    if options.engine is not None:
        cache = EtagCache(options.engine, tenant_id)
        cache.prune()
    try:
        yield GitHubClient(
            http=http,
            tenant_id=tenant_id,
            api=config.url.split("?")[0],
            cache=cache,
            secret=token,
            max_attempts=options.max_attempts,
            max_wait_s=options.max_wait_s,
        )
    finally:
        http.close()


GITHUB = Source(
    name="github",
    title="GitHub",
    parse=parse_section,
    open_client=open_client,
    max_wait_s=900.0,  # a primary rate limit resets within the hour; waits longer than this fail the step
    page_size=100,  # per_page: GitHub allows at most 100
    uses_database=True,  # the ETag cache
    holds="org and/or repos",
)
