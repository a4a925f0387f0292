"""All entity specs of all sources, in dependency order, and the names derived from them."""

from __future__ import annotations

from etl_assets.core.records import EntitySpec
from etl_assets.core.sources.github.specs import SPECS as GITHUB_SPECS
from etl_assets.core.sources.jira.specs import SPECS as JIRA_SPECS

CATALOGUE: tuple[EntitySpec, ...] = (*JIRA_SPECS, *GITHUB_SPECS)
BY_NAME: dict[str, EntitySpec] = {spec.name: spec for spec in CATALOGUE}
# Entity names name tables, collections and assets across sources: two alike would share them.
assert len(BY_NAME) == len(CATALOGUE), "entity names must be unique across sources"
