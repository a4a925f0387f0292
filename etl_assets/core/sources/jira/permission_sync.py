"""One tenant's permission sync, Dagster-free: fetch → commit tables and access lists → payload writes.

The two halves are separate steps on purpose (the commit-first rule): :func:`sync_permission_tables`
commits the rules and every point's access list in one transaction and returns what changed;
:func:`apply_pending_access` then writes the pending lists to Qdrant as payloads and clears the
pending mark. A no-change sync commits no list and writes nothing to Qdrant; no sync ever asks
for an embedding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from qdrant_client import AsyncQdrantClient
from sqlalchemy import Engine

from etl_assets.core.access_sync import AccessWriteStats, PointIds, apply_access_updates
from etl_assets.core.permissions import RESTRICTED, AccessList, IssueFacts, compute_access, fail_safe_reasons
from etl_assets.core.sources.jira import permission_tables as pt
from etl_assets.core.sources.jira.client import JiraClient
from etl_assets.core.sources.jira.permissions import fetch_permissions
from etl_assets.core.store.ops import record_raw
from etl_assets.core.store.retention import Keep, PruneResult, prune_raw

RAW_ENTITY = "permissions"  # the raw_batches entity the permission responses are landed under


@dataclass
class PermissionSyncResult:
    """Figures for the asset's metadata, and the lists the payload step will write."""

    points: int
    changed: int  # points whose list this sync changed (or that are still pending)
    distinct_lists: int
    fail_safe_points: int
    fail_safe_projects: dict[str, str]  # project key -> one-line reason
    unreadable: dict[str, str]  # everything that could not be read -> reason
    jira_requests: int
    raw_batch: int  # the landed responses (raw_batches / raw_jira_pages, entity "permissions")
    raw_pages: int
    pending: dict[AccessList, list[str]] = field(default_factory=dict)
    pruned: PruneResult | None = None  # the raw retention applied after the commit


def sync_permission_tables(
    engine: Engine,
    client: JiraClient,
    tenant_id: str,
    projects: Sequence[Mapping[str, Any]],
    issues: Sequence[IssueFacts],
    *,
    run_id: str | None = None,
    retention: Keep | None = None,
) -> PermissionSyncResult:
    """Fetch the tenant's rules, then commit them and every point's access list in one transaction;
    after the commit, prune the landed responses ``retention`` does not keep."""
    before = client.stats.requests
    fetched = fetch_permissions(client, projects, issues)
    access = compute_access(fetched.snapshot, issues)
    with engine.begin() as conn:
        # The responses as Jira sent them, beside the rules parsed from them (same transaction).
        raw_batch = record_raw(conn, tenant_id, RAW_ENTITY, fetched.pages, run_id=run_id)
        pt.save_snapshot(conn, tenant_id, fetched)
        pending = pt.save_access(conn, tenant_id, access)
    pruned = prune_raw(engine, tenant_id, RAW_ENTITY, retention or Keep())
    return PermissionSyncResult(
        points=len(access),
        changed=sum(len(keys) for keys in pending.values()),
        distinct_lists=len({a.principals for a in access.values()}),
        fail_safe_points=sum(1 for a in access.values() if a.principals == (RESTRICTED,)),
        fail_safe_projects=fail_safe_reasons(fetched.snapshot),
        unreadable=dict(fetched.snapshot.unreadable),
        jira_requests=client.stats.requests - before,
        raw_batch=raw_batch,
        raw_pages=len(fetched.pages),
        pending=pending,
        pruned=pruned,
    )


async def apply_pending_access(
    engine: Engine,
    qdrant: AsyncQdrantClient,
    tenant_id: str,
    collection_for: Mapping[str, str],
    *,
    point_ids: PointIds | None = None,
) -> AccessWriteStats:
    """Write the committed, pending access lists to Qdrant, then clear their pending mark."""
    read_at = datetime.now(UTC)
    with engine.connect() as conn:
        pending = pt.pending_access(conn, tenant_id)
    stats = await apply_access_updates(qdrant, collection_for, pending, point_ids=point_ids)
    with engine.begin() as conn:
        pt.mark_applied(conn, tenant_id, stats.applied, read_at=read_at)
    return stats
