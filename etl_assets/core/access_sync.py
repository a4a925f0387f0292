"""The Qdrant side of permission-aware search: access payloads, their index, and the search filter.

Every point carries ``access``: the access list of its issue or comment (see
:mod:`etl_assets.core.permissions`), keyword-indexed. A search as a principal adds
:func:`access_filter` — match-any of the searcher's principals on ``access`` — to its Qdrant
filter, so the store never returns what the searcher may not see; a point without ``access``
(written before its list was committed) matches no principal, which fails safe. An operator's
``--unrestricted`` search simply adds no access filter (and is logged by the caller).

Changes are payload writes only, never re-embedding: after the permission tables commit
(``permission_tables.save_access`` returns the pending lists), :func:`apply_access_updates`
writes each distinct list with one ``set_payload`` per batch of external ids (a filter on
``external_id``, so every chunk of an issue is covered), then the caller clears the pending
mark (``permission_tables.mark_applied``) in a new transaction. A failure leaves them pending
for the next sync (convergence).

The Dagster stage, to be wired once the hybrid-search branch is merged (sketch)::

    jira/raw/permissions      (per tenant partition) fetch_permissions(client, projects, issue facts
                               from the committed issues table) → raw pages landed
    tables/permissions        save_snapshot + compute_access + save_access in one transaction;
                               metadata: projects failing safe and why (fail_safe_reasons),
                               points changed, distinct lists
    vectors/access            after tables/permissions: ensure_access_index on each collection,
                               apply_access_updates(pending) → mark_applied; metadata: payload
                               writes, points updated, 0 embedding requests
    schedule                   every 30 minutes (``*/30 * * * *``) over all tenants, plus on demand;
                               a no-change sync fetches the rules and writes nothing to Qdrant.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from qdrant_client import AsyncQdrantClient, models

from etl_assets.core.permissions import AccessList

log = logging.getLogger(__name__)

ACCESS_FIELD = "access"
# point key kind ("issue:<id>") -> the entity whose collection holds those points
DEFAULT_ENTITIES = {"issue": "issues", "comment": "comments"}
SET_PAYLOAD_MAX_IDS = 1000


def access_filter(principals: Iterable[str]) -> models.Filter:
    """The Qdrant filter admitting exactly the points whose ``access`` names any of ``principals``."""
    wanted = sorted(set(principals))
    if not wanted:
        raise ValueError("a search principal needs at least one principal (e.g. 'public')")
    return models.Filter(must=[models.FieldCondition(key=ACCESS_FIELD, match=models.MatchAny(any=wanted))])


def with_access(base: models.Filter | None, principals: Iterable[str]) -> models.Filter:
    """``base`` (tenant, entity filters...) AND the access filter."""
    access = access_filter(principals)
    if base is None:
        return access
    return models.Filter(must=[base, access])


async def ensure_access_index(client: AsyncQdrantClient, collection: str, *, local: bool = False) -> bool:
    """Create the keyword index on ``access`` unless present; True if created.

    Local mode ignores payload indexes (and warns), so it is skipped there.
    """
    if local:
        return False
    info = await client.get_collection(collection)
    if ACCESS_FIELD in (info.payload_schema or {}):
        return False
    await client.create_payload_index(collection, ACCESS_FIELD, field_schema=models.PayloadSchemaType.KEYWORD)
    return True


@dataclass
class AccessWriteStats:
    payload_writes: int = 0  # set_payload requests
    points: int = 0  # point keys whose list was written
    applied: list[str] = field(default_factory=list)  # point keys now in the index (to mark_applied)
    missing_collections: set[str] = field(default_factory=set)


async def apply_access_updates(
    client: AsyncQdrantClient,
    collection_for: Mapping[str, str],
    updates: Mapping[AccessList, Sequence[str]],
    *,
    batch: int = SET_PAYLOAD_MAX_IDS,
) -> AccessWriteStats:
    """Write each pending access list to its points: one ``set_payload`` per list, entity and batch.

    ``collection_for`` maps a point-key kind (``issue``, ``comment``) to its collection name.
    A collection that does not exist yet has no stale points: its keys count as applied (the
    vector sync writes ``access`` with each new point from the committed table).
    """
    stats = AccessWriteStats()
    existing: dict[str, bool] = {}
    for acl, keys in updates.items():
        by_kind: dict[str, list[str]] = {}
        for key in keys:
            kind, _, external_id = key.partition(":")
            if kind not in collection_for:
                raise ValueError(f"access update for {key!r}: no collection for points of kind {kind!r}")
            by_kind.setdefault(kind, []).append(external_id)
        for kind, ids in by_kind.items():
            name = collection_for[kind]
            if name not in existing:
                existing[name] = await client.collection_exists(name)
            if existing[name]:
                for start in range(0, len(ids), batch):
                    chunk = ids[start : start + batch]
                    await client.set_payload(
                        name,
                        payload={ACCESS_FIELD: list(acl)},
                        points=models.Filter(
                            must=[models.FieldCondition(key="external_id", match=models.MatchAny(any=chunk))]
                        ),
                        wait=True,
                    )
                    stats.payload_writes += 1
            else:
                stats.missing_collections.add(name)
            stats.points += len(ids)
            stats.applied += [f"{kind}:{i}" for i in ids]
    return stats
