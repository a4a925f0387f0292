"""All entity specs of all sources, in dependency order, and the names derived from them."""

from __future__ import annotations

from etl_assets.core.records import EntitySpec
from etl_assets.core.sources.jira.specs import SPECS as JIRA_SPECS

CATALOGUE: tuple[EntitySpec, ...] = (*JIRA_SPECS,)
BY_NAME: dict[str, EntitySpec] = {spec.name: spec for spec in CATALOGUE}
