"""A generated, realistic Jira Cloud site and an in-process Jira REST v3 server.

The ``sample://`` tenants, the tests and the benchmarks sync from it instead of a real
site. The package has four parts:

* :mod:`.corpus`: the multilingual texts (``data/*.json``) issues are written from;
* :mod:`.generator`: :func:`generate_sample_site` builds a deterministic
  :class:`JiraSite` from a seed, and :func:`labelled_queries` labels natural-language
  queries with the keys of the issues on their topic (:mod:`.site` holds the site
  itself and its edits);
* :mod:`.jql`: :func:`run_jql` evaluates the JQL subset the sync uses;
* :mod:`.transport`: :class:`JiraSiteHandler` serves the site the way Jira Cloud's REST
  API does, and :func:`sample_transport` wraps it for ``httpx.Client(transport=...)``;
* :mod:`.permissions`: the site's access rules (users, groups, schemes, security levels,
  restricted comments) and the permission endpoints; :mod:`.urls` turns a ``sample://`` URL
  into its site (with those rules unless ``permissions=off``).

``SAMPLE_QUERIES`` is :func:`labelled_queries` of the default site, computed on first use.
"""

from __future__ import annotations

from typing import Any

from etl_assets.core.sources.jira.sample.generator import (
    default_labelled_queries,
    generate_sample_site,
    labelled_queries,
)
from etl_assets.core.sources.jira.sample.jql import JqlError, run_jql
from etl_assets.core.sources.jira.sample.site import SITE_NOW, JiraSite, format_jira_timestamp
from etl_assets.core.sources.jira.sample.transport import JiraSiteHandler, sample_transport
from etl_assets.core.sources.jira.sample.urls import build_sample_site, permission_fixture_for, sample_site_for

__all__ = [
    "JiraSite",
    "JiraSiteHandler",
    "generate_sample_site",
    "labelled_queries",
    "sample_transport",
    "format_jira_timestamp",
    "run_jql",
    "JqlError",
    "SITE_NOW",
    "build_sample_site",
    "permission_fixture_for",
    "sample_site_for",
]


def __getattr__(name: str) -> Any:
    # Generating the default site takes a moment: do it only when someone asks.
    if name == "SAMPLE_QUERIES":
        return default_labelled_queries()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
