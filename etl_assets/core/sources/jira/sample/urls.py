"""``sample://NAME?seed=&projects=&issues=&permissions=`` URLs: the demo site a sample tenant syncs.

:func:`build_sample_site` generates the site a URL describes; unless the URL says
``permissions=off`` the site gets access rules (:func:`~.permissions.site_permission_fixture`),
and its REST handler then serves the permission endpoints too. :func:`sample_site_for` keeps
one site per URL for the life of the process (the Jira resource serves it, tests edit it and
watch the sync follow); :func:`permission_fixture_for` is that site's fixture, for tests that
compute what each user may see.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import parse_qs, urlsplit

from etl_assets.core.sources.jira.sample.generator import generate_sample_site
from etl_assets.core.sources.jira.sample.permissions import PermissionFixture, site_permission_fixture
from etl_assets.core.sources.jira.sample.site import JiraSite

__all__ = ["build_sample_site", "permission_fixture_for", "sample_site_for"]

_OFF = {"off", "false", "no", "0"}
_ON = {"on", "true", "yes", "1"}


def _options(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return parts.netloc, {k: v[-1] for k, v in parse_qs(parts.query).items()}


def build_sample_site(url: str) -> JiraSite:
    """A new site as ``url`` describes it (defaults: seed 7, 36 projects, 300 issues, permissions on)."""
    name, q = _options(url)
    permissions = q.get("permissions", "on").strip().lower()
    if permissions not in _ON | _OFF:
        raise ValueError(f"sample URL {url!r}: permissions={permissions!r} (use on or off)")
    site = generate_sample_site(
        seed=int(q.get("seed", 7)),
        n_projects=int(q.get("projects", 36)),
        n_issues=int(q.get("issues", 300)),
        base_url=f"https://{name}.sample.atlassian.net",
    )
    if permissions in _ON and site.users:
        site_permission_fixture(site, seed=int(q.get("seed", 7)))
    return site


@functools.cache
def sample_site_for(url: str) -> JiraSite:
    """The one site of ``url`` in this process (generated on first use)."""
    return build_sample_site(url)


def permission_fixture_for(url: str) -> PermissionFixture | None:
    """The access rules of :func:`sample_site_for` ``(url)``; None with ``permissions=off``."""
    fixture: Any = sample_site_for(url).permissions
    return fixture if isinstance(fixture, PermissionFixture) else None
