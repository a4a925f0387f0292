"""Exact convergence of a tenant: tables equal to its fake Jira site, points equal to live rows.

:func:`convergence_problems` lists every way the tenant's tables and Qdrant collections
differ from what a clean first sync of its sample site would have produced. It reads the
database and Qdrant through its own connections, so it works the same for an in-process
test and for ``scripts/crash_consistency.py``, whose runs were killed in another process.
The tests' ``assert_converged`` is built on it.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, cast

from qdrant_client import models
from sqlalchemy import Engine, create_engine, func, select

from etl_assets.core.catalogue import CATALOGUE
from etl_assets.core.embeddings.base import Embedder
from etl_assets.core.records import EntitySpec
from etl_assets.core.sources.jira.parsers import parse_jira_datetime
from etl_assets.core.sources.jira.sample import JiraSite
from etl_assets.core.store import ops, schema
from etl_assets.core.vectorstore import collection_name, layout_of, open_qdrant, point_id
from etl_assets.core.vectorsync import plan_row
from etl_assets.fakes.openai_server import fake_vector

__all__ = ["ConvergenceEnv", "convergence_problems", "read_points", "site_objects"]


class SiteTenant(Protocol):
    """A tenant as the checks see it: the site its state must converge to."""

    @property
    def site(self) -> JiraSite: ...


class ConvergenceEnv(Protocol):
    """Where a deployment keeps its state, and each tenant's fake site."""

    @property
    def database_url(self) -> str: ...

    @property
    def qdrant_path(self) -> str: ...

    @property
    def tenants(self) -> Mapping[str, SiteTenant]: ...


# -- what the site holds ----------------------------------------------------------------------


def site_objects(site: JiraSite, entity: str) -> list[Any]:
    """The site's objects of one entity, as the sync fetches them (bad-input tests plant non-objects)."""
    if entity == "comments":  # carried by their issues
        out: list[Any] = []
        issues: list[Any] = list(site.issues)  # may hold planted non-objects
        for issue in issues:
            fields = issue.get("fields") if isinstance(issue, dict) else None
            comment = fields.get("comment") if isinstance(fields, dict) else None
            if isinstance(comment, dict) and isinstance(comment.get("comments"), list):
                out += comment["comments"]
        return out
    return {"projects": site.projects, "wits": site.issue_types, "statuses": site.statuses, "issues": site.issues}[
        entity
    ]


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _expected_fields(entity: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The columns a row must hold for this Jira object, read straight from the object."""
    if entity == "projects":
        return {"key": obj.get("key"), "name": _strip(obj.get("name")), "project_type": obj.get("projectTypeKey")}
    if entity == "wits":
        return {
            "name": _strip(obj.get("name")),
            "hierarchy_level": obj.get("hierarchyLevel"),
            "subtask": obj.get("subtask"),
        }
    if entity == "statuses":
        return {"name": _strip(obj.get("name")), "category_key": (obj.get("statusCategory") or {}).get("key")}
    if entity == "comments":
        return {"created": parse_jira_datetime(obj.get("created"))}
    fields = obj.get("fields") or {}
    return {
        "key": obj.get("key"),
        "summary": _strip(fields.get("summary")),
        "project_external_id": (fields.get("project") or {}).get("id"),
        "wit_external_id": (fields.get("issuetype") or {}).get("id"),
        "status_external_id": (fields.get("status") or {}).get("id"),
        "updated": parse_jira_datetime(fields["updated"]),
    }


# -- reading state ----------------------------------------------------------------------------


def read_points(
    env: ConvergenceEnv, *, qdrant_url: str | None = None, qdrant_api_key: str | None = None, with_vectors: bool = True
) -> dict[str, dict[str, Any]]:
    """Every collection: {"metadata", "size", "points": [Record]} (local folder unless ``qdrant_url``)."""

    async def go() -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        async with open_qdrant(qdrant_url, qdrant_api_key, env.qdrant_path, lock_timeout_s=60) as client:
            for description in (await client.get_collections()).collections:
                info = await client.get_collection(description.name)
                points: list[Any] = []
                offset = None
                while True:
                    page, offset = await client.scroll(
                        description.name, limit=500, offset=offset, with_payload=True, with_vectors=with_vectors
                    )
                    points += page
                    if offset is None:
                        break
                out[description.name] = {
                    "metadata": info.config.metadata or {},
                    "size": layout_of(info).size,
                    "points": points,
                }
        return out

    return asyncio.run(go())


class _WholeText:
    """Stands in for an embedder where only the text (not its chunking) matters."""

    def __init__(self, model: str, dimensions: int) -> None:
        self.model, self.dimensions = model, dimensions

    def split(self, text: str, max_tokens: int) -> list[str]:
        return [text]

    def count_tokens(self, text: str) -> int:
        return 0


def _expected_rows(tenant: Any, spec: EntitySpec) -> dict[str, dict[str, Any]]:
    """Source id -> the columns its row must hold, for every object the tenant's source holds.

    A tenant without a fake of the source (no ``github`` attribute, say) must have no live rows.
    """
    if spec.source == "github":
        from etl_assets.fakes.github_server import expected_rows

        github = getattr(tenant, "github", None)
        return expected_rows(github, spec.name) if github is not None else {}
    objects = (o for o in site_objects(tenant.site, spec.name) if isinstance(o, dict) and "id" in o)
    return {str(o["id"]): _expected_fields(spec.name, o) for o in objects}


def _table_problems(
    engine: Engine, spec: EntitySpec, tenant_id: str, tenant: Any, skip: set[str]
) -> tuple[list[str], list[dict[str, Any]]]:
    problems: list[str] = []
    t = spec.table
    with engine.connect() as conn:
        all_rows = [dict(r._mapping) for r in conn.execute(select(t).where(t.c.tenant_id == tenant_id))]
    counts = Counter(r["external_id"] for r in all_rows)
    src = {"jira": "Jira", "github": "GitHub"}.get(spec.source, spec.source)
    problems += [f"{spec.name}: {src} id {k} has {n} rows" for k, n in counts.items() if n > 1]
    live = {r["external_id"]: r for r in all_rows if r["deleted_at"] is None}
    objects = _expected_rows(tenant, spec)
    wanted = set(objects) - skip
    have = set(live) - skip
    problems += [f"{spec.name}: {src} object {k} has no live row" for k in sorted(wanted - have)]
    problems += [f"{spec.name}: live row {k} is not in {src}" for k in sorted(have - wanted)]
    for key in sorted(wanted & have):
        row = live[key]
        for column, value in objects[key].items():
            got = ops.as_utc(row[column]) if column in ("updated", "created") else row[column]
            if got != value:
                problems.append(f"{spec.name}: row {key}.{column} is {got!r}, {src} has {value!r}")
    deleted_but_present = {r["external_id"] for r in all_rows if r["deleted_at"] is not None} & wanted
    problems += [f"{spec.name}: row {k} is marked deleted but exists in {src}" for k in sorted(deleted_but_present)]
    rows = [r for page in ops.iter_rows(engine, spec, tenant_id) for r in page]
    return problems, rows


def _point_problems(
    spec: EntitySpec,
    tenant_id: str,
    rows: list[dict[str, Any]],
    collection: dict[str, Any] | None,
    *,
    check_vectors: bool,
) -> list[str]:
    name = collection_name(tenant_id, spec.name)
    if collection is None:
        return [f"{name}: missing, but the table has {len(rows)} live rows"] if rows else []
    problems: list[str] = []
    meta = collection["metadata"]
    model, size = meta.get("embedding_model"), collection["size"]
    if meta.get("tenant_id") not in (None, tenant_id):
        problems.append(f"{name}: created for tenant {meta.get('tenant_id')!r}")
    by_row: dict[str, list[Any]] = defaultdict(list)
    for p in collection["points"]:
        payload = p.payload or {}
        ext, chunk = payload.get("external_id"), payload.get("chunk")
        if payload.get("tenant_id") != tenant_id or payload.get("entity") != spec.name:
            problems.append(f"{name}: point {p.id} belongs to {payload.get('tenant_id')!r}/{payload.get('entity')!r}")
        if not isinstance(chunk, int) or str(p.id) != point_id(tenant_id, spec.name, str(ext), chunk):
            problems.append(f"{name}: point {p.id} does not have the deterministic id of ({ext}, {chunk})")
        if check_vectors and p.vector is not None:
            named = p.vector if isinstance(p.vector, dict) else {"dense": p.vector}
            vector = named.get("dense")
            vector = vector if isinstance(vector, list) else None
            text = payload.get("text")
            if isinstance(p.vector, dict) and not isinstance(named.get("bm25"), models.SparseVector):
                problems.append(f"{name}: point {p.id} has no BM25 vector")
            if vector is None or len(vector) != size:
                problems.append(f"{name}: point {p.id} has a vector of the wrong size")
            # The payload keeps the first 2,000 characters of what was embedded: shorter texts are
            # the whole input, so the fake's vector for that text must be the one stored.
            elif isinstance(text, str) and len(text) < 2000 and _distance(vector, fake_vector(text, size)) > 1e-4:
                problems.append(f"{name}: point {p.id} ({ext}#{chunk}) holds a vector of another text")
        by_row[str(ext)].append(p)
    live = {r["external_id"]: r for r in rows}
    problems += [f"{name}: orphan points of row {k} (not a live row)" for k in sorted(set(by_row) - set(live))]
    problems += [f"{name}: live row {k} has no point" for k in sorted(set(live) - set(by_row))]
    # plan_row only reads the model, the dimensions and the split of the text: no embedding is made.
    stub = cast(Embedder, _WholeText(str(model), int(size or 0)))
    for key in sorted(set(live) & set(by_row)):
        points = by_row[key]
        chunks = sorted(p.payload.get("chunk") for p in points)
        declared = {p.payload.get("chunks") for p in points}
        count = next(iter(declared)) if len(declared) == 1 else None
        if isinstance(count, int) and chunks != list(range(count)) and set(chunks) < set(range(count)):
            # e.g. a write that failed part way through a row's chunks: only points are missing
            missing = sorted(set(range(count)) - set(chunks))
            problems.append(f"{name}: row {key} is missing chunks {missing} of {count}")
            continue
        if count is None or chunks != list(range(count or 0)):
            problems.append(f"{name}: row {key} has chunks {chunks}, payloads declare {sorted(map(str, declared))}")
            continue
        expected = plan_row(spec, tenant_id, live[key], stub, 10**9)[0].payload
        head = next(p for p in points if p.payload.get("chunk") == 0).payload
        stale = sorted(k for k, v in expected.items() if k not in ("chunk", "chunks", "text") and head.get(k) != v)
        if stale:
            problems.append(f"{name}: row {key}'s point is stale in {', '.join(stale)}")
        if len({p.payload.get("content_hash") for p in points}) != 1:
            problems.append(f"{name}: row {key}'s chunks come from different versions of the row")
    return problems


def _distance(a: list[float], b: list[float]) -> float:
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def convergence_problems(
    env: ConvergenceEnv,
    tenant_id: str,
    *,
    skip: Mapping[str, Iterable[str]] | None = None,
    qdrant_url: str | None = None,
    qdrant_api_key: str | None = None,
    check_vectors: bool = True,
    entities: Iterable[EntitySpec] = CATALOGUE,
) -> list[str]:
    """Every way the tenant's tables and collections differ from its fake Jira site.

    ``env`` needs ``database_url``, ``qdrant_path`` and ``tenants[tenant_id].site``.
    ``skip`` names Jira ids per entity whose row is not compared with the site (records
    a test expects to be quarantined); their rows, if any, must still have exact points.
    """
    skipped = {k: set(v) for k, v in (skip or {}).items()}
    tenant = env.tenants[tenant_id]
    engine = create_engine(env.database_url)
    problems: list[str] = []
    try:
        b = schema.raw_batches
        with engine.connect() as conn:
            pending = conn.execute(
                select(b.c.entity, func.count())
                .where(b.c.tenant_id == tenant_id, b.c.consumed_at.is_(None))
                .group_by(b.c.entity)
            ).all()
        problems += [
            f"raw: {n} batch(es) of {entity} were landed but never built into the table" for entity, n in pending
        ]
        rows: dict[str, list[dict[str, Any]]] = {}
        for spec in entities:
            found, rows[spec.name] = _table_problems(engine, spec, tenant_id, tenant, skipped.get(spec.name, set()))
            problems += found
    finally:
        engine.dispose()
    collections = read_points(env, qdrant_url=qdrant_url, qdrant_api_key=qdrant_api_key, with_vectors=check_vectors)
    for spec in entities:
        problems += _point_problems(
            spec,
            tenant_id,
            rows[spec.name],
            collections.get(collection_name(tenant_id, spec.name)),
            check_vectors=check_vectors,
        )
    return problems
