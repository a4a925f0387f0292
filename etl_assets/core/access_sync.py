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

The Dagster stage that runs these steps is ``etl_assets/defs/permissions.py``; the vector sync
writes each new point's list with it (``EntitySpec.access``) and repairs lists that drifted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from qdrant_client import AsyncQdrantClient, models

from etl_assets.core.permissions import AccessList
from etl_assets.core.vectorstore import ACCESS_PAYLOAD

log = logging.getLogger(__name__)

ACCESS_FIELD = ACCESS_PAYLOAD
# point key kind ("issue:<id>") -> the entity whose collection holds those points
DEFAULT_ENTITIES = {"issue": "issues", "comment": "comments"}
SET_PAYLOAD_MAX_IDS = 1000
OPERATIONS_PER_REQUEST = 64


def access_condition(principals: Iterable[str]) -> models.FieldCondition:
    """Points whose ``access`` names any of ``principals`` (applied inside Qdrant, guarantee 4)."""
    wanted = sorted(set(principals))
    if not wanted:
        raise ValueError("a search principal needs at least one principal (e.g. 'public')")
    return models.FieldCondition(key=ACCESS_FIELD, match=models.MatchAny(any=wanted))


def access_filter(principals: Iterable[str]) -> models.Filter:
    """The Qdrant filter admitting exactly the points whose ``access`` names any of ``principals``."""
    return models.Filter(must=[access_condition(principals)])


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
    payload_writes: int = 0  # set-payload operations (one per list, collection and id batch)
    requests: int = 0  # Qdrant requests carrying them (batch_update_points)
    points: int = 0  # point keys whose list was written
    applied: list[str] = field(default_factory=list)  # point keys now in the index (to mark_applied)
    missing_collections: set[str] = field(default_factory=set)


PointIds = Callable[[str, str], Sequence[str]]


async def apply_access_updates(
    client: AsyncQdrantClient,
    collection_for: Mapping[str, str],
    updates: Mapping[AccessList, Sequence[str]],
    *,
    point_ids: PointIds | None = None,
    batch: int = SET_PAYLOAD_MAX_IDS,
    operations_per_request: int = OPERATIONS_PER_REQUEST,
) -> AccessWriteStats:
    """Write each pending access list to its points as payload-only operations.

    ``collection_for`` maps a point-key kind (``issue``, ``comment``) to its collection name.
    Points are addressed by ``point_ids(kind, external_id)`` when given (the deterministic ids
    of every chunk: direct writes, no scan) and otherwise by a filter on ``external_id`` (every
    chunk; indexed on a Qdrant server, a scan in local mode). Operations are sent together,
    ``operations_per_request`` per ``batch_update_points`` request. A collection that does not
    exist yet has no stale points: its keys count as applied (the vector sync writes ``access``
    with each new point from the committed table).
    """
    stats = AccessWriteStats()
    existing: dict[str, bool] = {}
    queued: dict[str, list[models.UpdateOperation]] = {}

    async def flush(name: str) -> None:
        ops = queued.pop(name, [])
        for start in range(0, len(ops), operations_per_request):
            await client.batch_update_points(
                name, update_operations=ops[start : start + operations_per_request], wait=True
            )
            stats.requests += 1

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
            stats.points += len(ids)
            stats.applied += [f"{kind}:{i}" for i in ids]
            if not existing[name]:
                stats.missing_collections.add(name)
                continue
            selectors: list[models.Filter | list[models.ExtendedPointId]] = []
            if point_ids is not None:
                targets: list[models.ExtendedPointId] = [pid for i in ids for pid in point_ids(kind, i)]
                selectors += [targets[s : s + batch] for s in range(0, len(targets), batch)]
            else:
                selectors += [
                    models.Filter(
                        must=[models.FieldCondition(key="external_id", match=models.MatchAny(any=ids[s : s + batch]))]
                    )
                    for s in range(0, len(ids), batch)
                ]
            for selector in selectors:
                if isinstance(selector, list):
                    op = models.SetPayload(payload={ACCESS_FIELD: list(acl)}, points=selector)
                else:
                    op = models.SetPayload(payload={ACCESS_FIELD: list(acl)}, filter=selector)
                queued.setdefault(name, []).append(models.SetPayloadOperation(set_payload=op))
                stats.payload_writes += 1
    for name in list(queued):
        await flush(name)
    return stats
