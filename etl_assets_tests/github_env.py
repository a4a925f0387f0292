"""Shared set-up of the GitHub tests: tenant 1 of the ``env`` fixture also indexes a fake GitHub org
served on loopback (:class:`etl_assets.fakes.github_server.GitHubServer`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dagster as dg
from sqlalchemy import create_engine, select

from etl_assets.core.catalogue import CATALOGUE
from etl_assets.core.records import EntitySpec
from etl_assets.core.sources.github.sample import generate_sample_org
from etl_assets.core.sources.github.specs import SPECS
from etl_assets.core.tenants import TenantRegistry
from etl_assets.defs import names
from etl_assets.defs.build import build_definitions
from etl_assets.defs.resources import SourceResource
from etl_assets.fakes.github_server import GitHubServer

GITHUB_TOKEN = "ghp_FAKEtoken0123456789SECRETVALUE"
TOKEN_ENV = "T1_GITHUB_TOKEN"
GITHUB_SELECTION = " or ".join(
    f'key:"{"/".join(k.path)}"'
    for spec in SPECS
    for k in (names.raw_key(spec), names.table_key(spec), names.vector_key(spec))
)


@contextmanager
def github_for(env: Any, monkeypatch: Any, *, prefix: str = "/api/v3", **org: Any) -> Iterator[GitHubServer]:
    """Start a fake org for tenant 1 of ``env`` (kept on ``env.tenants['1'].github`` for the convergence checks)."""
    site = generate_sample_org("acme", **org)
    monkeypatch.setenv(TOKEN_ENV, GITHUB_TOKEN)
    with GitHubServer(site, token=GITHUB_TOKEN, prefix=prefix) as server:
        env.tenants["1"].github = site
        yield server


def registry(env: Any, server: GitHubServer, *, with_github: bool = True, **github: Any) -> TenantRegistry:
    tenants = []
    for t in env.tenants.values():
        entry: dict[str, Any] = {
            "id": t.id,
            "jira": {"url": t.url, "email_env": f"T{t.id}_JIRA_EMAIL", "token_env": f"T{t.id}_JIRA_TOKEN"},
        }
        if t.id == "1" and with_github:
            entry["github"] = {"url": server.api_url, "token_env": TOKEN_ENV, "org": "acme", **github}
        tenants.append(entry)
    return TenantRegistry.from_mapping({"tenants": tenants}, source="test")


def resources(env: Any, **github: Any) -> dict[str, Any]:
    res = env.resources()
    res["github"] = SourceResource(
        source="github", **{"max_attempts": 3, "max_wait_s": 0.5, "timeout_s": 2.0, **github}
    )
    return res


def run(
    env: Any,
    server: GitHubServer,
    tenant: str = "1",
    *,
    selection: str = GITHUB_SELECTION,
    run_config: Mapping[str, Any] | None = None,
    instance: dg.DagsterInstance | None = None,
    github: Mapping[str, Any] | None = None,
    tenant_github: Mapping[str, Any] | None = None,
    with_github: bool = True,
) -> dg.ExecuteInProcessResult:
    defs = build_definitions(
        registry=registry(env, server, with_github=with_github, **(tenant_github or {})),
        resources=resources(env, **(github or {})),
        env={"DATABASE_URL": env.database_url},
    )
    job = defs.resolve_implicit_global_asset_job_def()
    keys = list(dg.AssetSelection.from_string(selection).resolve(defs.resolve_asset_graph()))
    # An empty list would run the whole job (Dagster reads it as "no selection"): a mistyped
    # selection must fail here, not pass as a full run.
    assert keys, f"selection {selection!r} matches no asset"
    return job.execute_in_process(
        partition_key=tenant, asset_selection=keys, raise_on_error=False, run_config=run_config, instance=instance
    )


def reconcile_config() -> dict[str, Any]:
    ops: dict[str, Any] = {}
    for spec in SPECS:
        if spec.incremental:
            ops |= names.raw_run_config(spec, reconcile=True)["ops"]
    return {"ops": ops}


def rows(env: Any, spec: EntitySpec, tenant: str = "1", *, live: bool = True) -> dict[str, dict[str, Any]]:
    engine = create_engine(env.database_url)
    t = spec.table
    cond = t.c.deleted_at.is_(None) if live else t.c.deleted_at.is_not(None)
    with engine.connect() as conn:
        out = {r.external_id: dict(r._mapping) for r in conn.execute(select(t).where(t.c.tenant_id == tenant, cond))}
    engine.dispose()
    return out


GITHUB_ENTITIES: tuple[EntitySpec, ...] = tuple(s for s in CATALOGUE if s.source == "github")
