"""All entity specs of all sources, in dependency order, and the names derived from them."""

from __future__ import annotations

from etl_assets.core.records import EntitySpec
from etl_assets.core.source_api import Source
from etl_assets.core.sources.github.source import GITHUB
from etl_assets.core.sources.github.specs import SPECS as GITHUB_SPECS
from etl_assets.core.sources.jira import permission_tables
from etl_assets.core.sources.jira.source import JIRA
from etl_assets.core.sources.jira.specs import SPECS as JIRA_SPECS

# The permission tables are declared on import, like the entities' tables: importing them here makes
# every process (and so every migration) create the same schema, whatever else it imported.

# The sources: each reads its own section of a tenant's entry and opens its own client; the tenants
# registry and the one Dagster resource per source work from these declarations.
SOURCES: tuple[Source, ...] = (JIRA, GITHUB)
SOURCE_BY_NAME: dict[str, Source] = {source.name: source for source in SOURCES}

CATALOGUE: tuple[EntitySpec, ...] = (*JIRA_SPECS, *GITHUB_SPECS)
BY_NAME: dict[str, EntitySpec] = {spec.name: spec for spec in CATALOGUE}
# Entity names name tables, collections and assets across sources: two alike would share them.
assert len(BY_NAME) == len(CATALOGUE), "entity names must be unique across sources"
assert {spec.source for spec in CATALOGUE} <= set(SOURCE_BY_NAME), "every entity's source must be declared"

# Who a searcher is, for the access filter: (connection, tenant, e-mail or account id) -> the
# principals (``public``, ``user:…``, ``group:…``) from the committed permission tables; raises
# UnknownPrincipal (one line naming tenant and user). Jira is the source that says who may see what.
resolve_principal = permission_tables.resolve_principal
UnknownPrincipal = permission_tables.UnknownPrincipal
