"""The Jira rows of ``etl-assets doctor``: site and credentials, browsing projects, searching.

Three cheap reads per tenant (``GET /rest/api/3/myself``, ``GET /rest/api/3/project/search``
with ``maxResults=1``, ``POST /rest/api/3/search/jql`` with the tenant's JQL and
``maxResults=1``), through the same :class:`JiraClient` the sync uses, with two attempts
so that an unreachable site is reported quickly. Once the credentials are refused, nothing
else is asked.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx

from etl_assets.core.doctor import Check, TenantChecks
from etl_assets.core.errors import ConfigError
from etl_assets.core.http import one_line
from etl_assets.core.sources.jira.client import JiraAuthError, JiraClient, JiraError
from etl_assets.core.sources.jira.jql import SEARCH_PATH, tenant_jql
from etl_assets.core.sources.jira.source import jira_site
from etl_assets.core.tenants import Tenant

MYSELF_PATH = "/rest/api/3/myself"
PROJECT_SEARCH_PATH = "/rest/api/3/project/search"
JIRA_TIMEOUT_S = 20.0

JiraOpener = Callable[[Tenant], contextlib.AbstractContextManager[JiraClient]]


def jira_checks(opener: JiraOpener | None = None, environ: Mapping[str, str] | None = None) -> TenantChecks:
    """The doctor's Jira checks of a tenant, through ``opener`` (default :func:`open_jira`)."""
    return functools.partial(check_jira, opener=opener or functools.partial(open_jira, environ=environ))


@contextlib.contextmanager
def open_jira(tenant: Tenant, environ: Mapping[str, str] | None = None) -> Iterator[JiraClient]:
    """A client for ``tenant``'s site that fails fast (two attempts, short waits); closed on exit."""
    headers = {"Accept": "application/json", "User-Agent": "etl-assets doctor"}
    timeout = httpx.Timeout(JIRA_TIMEOUT_S, connect=10.0)
    if jira_site(tenant).is_sample:
        from etl_assets.core.sources.jira.sample import sample_transport

        site = sample_site(jira_site(tenant).url)
        http = httpx.Client(base_url=site.base_url, transport=sample_transport(site), headers=headers, timeout=timeout)
    else:
        email, token = jira_site(tenant).credentials(tenant.id, environ)  # type: ignore[misc]
        http = httpx.Client(
            base_url=jira_site(tenant).url, auth=httpx.BasicAuth(email, token), headers=headers, timeout=timeout
        )
    try:
        yield JiraClient(http=http, tenant_id=tenant.id, site=jira_site(tenant).url.split("?")[0], max_attempts=2)
    finally:
        http.close()


def sample_site(url: str) -> Any:
    """The bundled demo site a ``sample://NAME?seed=&projects=&issues=`` URL describes (as the sync reads it)."""
    from etl_assets.core.sources.jira.sample.urls import build_sample_site

    return build_sample_site(url)


def check_jira(tenant: Tenant, *, opener: JiraOpener) -> list[Check]:
    """Site and credentials (``/myself``), browsing projects, and searching with the tenant's JQL."""
    site = jira_site(tenant).url.split("?")[0]
    try:
        context = opener(tenant)
        client = context.__enter__()
    except ConfigError as exc:
        return [Check(tenant.id, "jira site", False, f"{site}: {one_line(str(exc))}", _credentials_fix(tenant))]
    try:
        return _jira_rows(tenant, client, site)
    finally:
        context.__exit__(None, None, None)


def _credentials_fix(tenant: Tenant) -> str:
    return (
        f"set {jira_site(tenant).email_env} to the Jira account's e-mail and {jira_site(tenant).token_env} to an API token "
        "of that account (id.atlassian.com → Security → API tokens)"
    )


def _jira_rows(tenant: Tenant, client: JiraClient, site: str) -> list[Check]:
    rows: list[Check] = []
    try:
        me = client.request("GET", MYSELF_PATH).json()
    except JiraAuthError as exc:
        return [Check(tenant.id, "jira site", False, f"{site}: {_short(exc)}", _credentials_fix(tenant))]
    except JiraError as exc:
        if exc.status == 404:
            fix = f"tenant {tenant.id}: jira.url must be the site's root, e.g. https://NAME.atlassian.net"
        elif exc.status is None:
            fix = f"tenant {tenant.id}: check jira.url in the tenants file and that the site is reachable from here"
        else:
            fix = "Jira answered an error: try again later; if it persists, check the site's status page"
        return [Check(tenant.id, "jira site", False, f"{site}: {_short(exc)}", fix)]
    who = me.get("displayName") or me.get("accountId") or "?" if isinstance(me, dict) else "?"
    rows.append(Check(tenant.id, "jira site", True, f"{site}: signed in as {who}"))
    rows.append(_projects_row(tenant, client))
    rows.append(_search_row(tenant, client))
    rows.append(_permissions_row(tenant, client))
    return rows


def _short(exc: JiraError) -> str:
    # The client's message starts with "tenant 'x' site URL: METHOD path: ..."; the table says tenant and site.
    text_ = str(exc)
    marker = ": GET " if ": GET " in text_ else ": POST "
    return one_line(text_.split(marker, 1)[1] if marker in text_ else text_, 300)


def _projects_row(tenant: Tenant, client: JiraClient) -> Check:
    # Projects listed in jira.projects that the account cannot see fail the search row below
    # (Jira refuses JQL naming a project the caller cannot browse); here: does it see any?
    try:
        data = client.request("GET", PROJECT_SEARCH_PATH, params={"maxResults": 1}).json()
    except JiraError as exc:
        return Check(tenant.id, "jira projects", False, _short(exc), _BROWSE_FIX)
    total = data.get("total") if isinstance(data, dict) else None
    count = total if isinstance(total, int) else len(data.get("values") or []) if isinstance(data, dict) else 0
    if not count:
        return Check(tenant.id, "jira projects", False, "the account sees no project", _BROWSE_FIX)
    return Check(tenant.id, "jira projects", True, f"{count} projects visible")


_BROWSE_FIX = "grant the Jira account the 'Browse projects' permission in the projects to sync"


def _search_row(tenant: Tenant, client: JiraClient) -> Check:
    try:
        jql = tenant_jql(tenant)
    except ValueError as exc:
        return Check(tenant.id, "jira search", False, one_line(str(exc)), "correct jira.projects in the tenants file")
    body = {"jql": jql, "fields": ["updated"], "maxResults": 1}
    try:
        data = client.request("POST", SEARCH_PATH, json_body=body).json()
    except JiraError as exc:
        fix = (
            f"correct jira.projects / jira.jql of tenant {tenant.id} in the tenants file (a project the "
            "account cannot browse is refused too: grant it 'Browse projects' there)"
            if exc.status == 400
            else _BROWSE_FIX
        )
        return Check(tenant.id, "jira search", False, f"{_short(exc)} — JQL: {jql}", fix)
    issues = data.get("issues") if isinstance(data, dict) else None
    found = "at least one issue matches" if issues else "no issue matches yet"
    return Check(tenant.id, "jira search", True, f"JQL accepted, {found}: {jql}")


_PERMISSIONS_FIX = (
    "give the API account 'Administer Jira' (or 'Administer projects' in each project), or accept that "
    "only unrestricted (operator) searches see these issues"
)


def _permissions_row(tenant: Tenant, client: JiraClient) -> Check:
    """Can the account read who may browse a project (the permission stage needs it)? Probed on
    the first project it sees; refused means that project's issues fail safe: operators only."""
    try:
        if jira_site(tenant).projects:  # the tenant's own first project, else the first the account sees
            key = jira_site(tenant).projects[0]
        else:
            data = client.request("GET", PROJECT_SEARCH_PATH, params={"maxResults": 1}).json()
            values = data.get("values") if isinstance(data, dict) else None
            first = values[0] if isinstance(values, list) and values and isinstance(values[0], dict) else {}
            if not first.get("key"):
                return Check(tenant.id, "jira permissions", False, "no project to read a scheme of", _BROWSE_FIX)
            key = str(first["key"])
        client.request("GET", f"/rest/api/3/project/{key}/permissionscheme")
    except JiraError as exc:
        if exc.status in (401, 403):
            return Check(
                tenant.id,
                "jira permissions",
                False,
                f"the account may not read permission schemes ({_short(exc)}): issues fail safe to operators only",
                _PERMISSIONS_FIX,
            )
        return Check(tenant.id, "jira permissions", False, _short(exc), _PERMISSIONS_FIX)
    return Check(
        tenant.id, "jira permissions", True, f"permission scheme of {key} readable (access lists can be synced)"
    )
