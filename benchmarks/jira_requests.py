"""Jira requests per 100 issues for a full fetch of the issues, before and after issue documents.

    .venv/bin/python benchmarks/jira_requests.py [--issues 300] [--page-size 100]

Counts the requests the issue fetch sends to the sample site (through the real client and the
site's REST handler): "before" is the search alone with the fields the sync asked for before
comments and history ("summary", ..., "parent"); "after" is today's fetch: comments embedded in
the search response and paged past the first 20 (GET /issue/{id}/comment, 100 a page), the
changelog by expand=changelog (paged past what the search embeds on GET /issue/{id}/changelog),
and one GET /field (a tenant's custom fields, and the user/group pickers access depends on). The cost
of the alternative for the history, POST /changelog/bulkfetch, is at least one request more per
search page (it takes the page's issue ids), printed as that lower bound.
"""

from __future__ import annotations

import argparse
import math
import re
from collections import Counter

import httpx

from etl_assets.core.records import FetchRequest
from etl_assets.core.sources.jira.client import JiraClient
from etl_assets.core.sources.jira.jql import search_pages, tenant_jql
from etl_assets.core.sources.jira.sample import generate_sample_site, sample_transport
from etl_assets.core.sources.jira.source import JiraSiteConfig
from etl_assets.core.sources.jira.specs import ISSUES
from etl_assets.core.tenants import Tenant

# The "before" baseline: the issue fields the release before comments and history asked for. A
# fixed snapshot on purpose (jql.ISSUE_FIELDS moves on), so the before/after figures stay comparable.
BEFORE_FIELDS = (
    "summary",
    "description",
    "issuetype",
    "status",
    "project",
    "priority",
    "labels",
    "components",
    "assignee",
    "reporter",
    "created",
    "updated",
    "resolution",
    "parent",
)


_ID = re.compile(r"/\d{4,}(?=/|$)")  # an issue id, not the API version


def count(site, fetch, paths: Counter[str] | None = None) -> tuple[int, int]:
    transport = sample_transport(site)

    def record(request: httpx.Request) -> httpx.Response:
        if paths is not None:  # one bucket per endpoint: ids in the path become {id}
            paths[f"{request.method} {_ID.sub('/{id}', request.url.path)}"] += 1
        return transport.handle_request(request)

    with httpx.Client(base_url=site.base_url, transport=httpx.MockTransport(record)) as http:
        client = JiraClient(http, "bench", site.base_url)
        size = sum(len(p.body) for p in fetch(client))
        return client.stats.requests, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issues", type=int, default=300)
    parser.add_argument("--page-size", type=int, default=100)
    args = parser.parse_args()
    site = generate_sample_site(n_issues=args.issues)
    n = len(site.issues)
    plain = Tenant("b", "B", {"jira": JiraSiteConfig(url=site.base_url, email_env="E", token_env="T")})
    custom = Tenant(
        "b",
        "B",
        {
            "jira": JiraSiteConfig(
                url=site.base_url, email_env="E", token_env="T", custom_fields=("Story Points", "Team")
            )
        },
    )
    jql = tenant_jql(plain)
    before, before_bytes = count(site, lambda c: search_pages(c, jql, fields=BEFORE_FIELDS, page_size=args.page_size))
    paths: Counter[str] = Counter()
    after, after_bytes = count(site, lambda c: ISSUES.fetch(c, FetchRequest(plain, page_size=args.page_size)), paths)
    with_cf, _ = count(site, lambda c: ISSUES.fetch(c, FetchRequest(custom, page_size=args.page_size)))
    pages = math.ceil(n / args.page_size)
    comments = sum(len(i["fields"]["comment"]["comments"]) for i in site.issues)
    print(f"{n} issues, {comments} comments, search page size {args.page_size}")
    print(
        f"before (search only):                       {before:4d} requests = {100 * before / n:.2f} per 100 issues, {before_bytes / 1e6:.2f} MB"
    )
    print(
        f"after (comments paged, expand=changelog):   {after:4d} requests = {100 * after / n:.2f} per 100 issues, {after_bytes / 1e6:.2f} MB"
    )
    print("  of which: " + ", ".join(f"{path} {k}" for path, k in sorted(paths.items())))
    print(f"after, with custom fields:                  {with_cf:4d} requests = {100 * with_cf / n:.2f} per 100 issues")
    print(
        f"changelog by bulkfetch instead: >= {after + pages:4d} requests = {100 * (after + pages) / n:.2f} per 100 issues"
    )


if __name__ == "__main__":
    main()
