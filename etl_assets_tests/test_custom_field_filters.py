"""Custom fields as filters: the vector sync indexes each configured field's single values by its
schema type (a Qdrant server, Qdrant Edge) and records them in the collection; search filters on
them by the field's name, and a name it cannot filter on is one clear line.

Runs on the loopback Qdrant REST server in strict mode (a filter without an index of the right
type is refused, as a server configured so refuses it), on Qdrant Edge and on qdrant-client's
local mode (no payload indexes; the filters work all the same).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import AsyncQdrantClient, models

from etl_assets.core.edge_client import EdgeQdrantClient
from etl_assets.core.search import NO_THRESHOLDS, FieldFilter, InvalidRequestError, SearchMode, search
from etl_assets.core.sources.jira.sample import generate_sample_site
from etl_assets.core.sources.jira.sample.documents import issues_with_field_names
from etl_assets.core.sources.jira.specs import ISSUES
from etl_assets.core.vectorstore import ROW_FILTERS_KEY, Collection, collection_name, migrated_payload_indexes
from etl_assets.core.vectorsync import VectorSyncResult, sync_vectors
from etl_assets.fakes.qdrant_server import FakeQdrant
from etl_assets_tests.test_hybrid import WordsEmbedder

TENANT = "t"
NAME = collection_name(TENANT, "issues")
T = models.PayloadSchemaType
# The sample site's fields with single values, as a tenant listing every custom field gets them;
# "Root cause" (an ADF text area) and "Affected sites" (several options) have none.
EXPECTED = {
    "cf_story_points": (T.FLOAT, "Story Points"),
    "cf_team": (T.KEYWORD, "Team"),
    "cf_area": (T.KEYWORD, "Area"),
    "cf_customer_contact": (T.KEYWORD, "Customer contact"),
    "cf_target_date": (T.DATETIME, "Target date"),
    "cf_runbook_url": (T.KEYWORD, "Runbook URL"),
}


def rows(n: int = 120) -> list[dict[str, Any]]:
    site = generate_sample_site()
    out = []
    for record in issues_with_field_names(site)[:n]:
        out.append({**ISSUES.parse(record), "id": len(out) + 1, "tenant_id": TENANT})
    return out


@dataclasses.dataclass
class Store:
    client: AsyncQdrantClient
    local: bool
    server: FakeQdrant | None = None

    async def indexes(self) -> dict[str, models.PayloadSchemaType]:
        if self.server is not None:  # what the server was asked to create
            return dict(self.server.indexes.get(NAME, {}))
        info = await self.client.get_collection(NAME)
        return {k: v.data_type for k, v in (info.payload_schema or {}).items()}

    def index_requests(self) -> int:
        assert self.server is not None
        return sum(1 for method, path, *_ in self.server.log if method == "PUT" and path.endswith("/index"))


@contextlib.asynccontextmanager
async def store(kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    if kind == "server":
        with FakeQdrant(tmp_path / "qdrant", require_indexes=True) as server:
            client = AsyncQdrantClient(url=server.url, timeout=30)
            try:
                yield Store(client, False, server)
            finally:
                await client.close()
        return
    client = EdgeQdrantClient(tmp_path / "edge") if kind == "edge" else AsyncQdrantClient(location=":memory:")
    try:
        yield Store(client, True)
    finally:
        await client.close()


async def sync(s: Store, data: list[dict[str, Any]], embedder: WordsEmbedder, spec=ISSUES) -> VectorSyncResult:
    live = {r["external_id"] for r in data}

    async def live_ids(candidates: list[str]) -> set[str]:
        return live & set(candidates)

    return await sync_vectors(
        spec=spec,
        tenant_id=TENANT,
        pages=lambda: iter([data[i : i + 50] for i in range(0, len(data), 50)]),
        live_ids=live_ids,
        embedder=embedder,
        collection=Collection(s.client, NAME, TENANT, "issues", local=s.local),
    )


async def keys_for(s: Store, embedder: WordsEmbedder, *filters: str) -> set[str]:
    """Every issue a filtered search returns (dense, no thresholds, k above the row count)."""
    hits = await search(
        s.client,
        embedder,
        "issue",
        tenant_id=TENANT,
        access=None,
        custom_fields=[FieldFilter.parse(f) for f in filters],
        k=500,
        mode=SearchMode.DENSE,
        thresholds=NO_THRESHOLDS,
    )
    return {h.key for h in hits}


def cf(row: dict[str, Any], name: str) -> Any:
    return ((row.get("custom_fields") or {}).get(name) or {}).get("value")


@pytest.mark.parametrize("kind", ["server", "edge"])
def test_the_sync_indexes_each_configured_fields_single_values_by_its_schema_type(kind: str, tmp_path: Path) -> None:
    data = rows()

    async def go() -> dict[str, Any]:
        async with store(kind, tmp_path) as s:
            embedder = WordsEmbedder()
            first = await sync(s, data, embedder)
            indexes = await s.indexes()
            record = ((await s.client.get_collection(NAME)).config.metadata or {})[ROW_FILTERS_KEY]
            before = s.index_requests() if s.server else None
            requests = embedder.requests
            second = await sync(s, data, embedder)
            return {
                "first": first,
                "second": second,
                "indexes": indexes,
                "record": record,
                "new_index_requests": (s.index_requests() - before) if s.server else 0,
                "embedding_requests": embedder.requests - requests,
            }

    out = asyncio.run(go())
    assert {k: v for k, v in out["indexes"].items() if k.startswith("cf_")} == {k: t for k, (t, _) in EXPECTED.items()}
    assert out["record"] == {k: {"kind": t.value, "name": n} for k, (t, n) in EXPECTED.items()}
    assert out["first"].payload_indexes_created == len(EXPECTED)
    # A re-run creates nothing and embeds nothing.
    assert out["second"].payload_indexes_created == 0 and out["new_index_requests"] == 0
    assert out["embedding_requests"] == 0


@pytest.mark.parametrize("kind", ["server", "edge", "local"])
def test_search_filters_on_custom_fields_by_their_names(kind: str, tmp_path: Path) -> None:
    data = rows()
    points = [r for r in data if cf(r, "Story Points") is not None]
    dated = sorted(cf(r, "Target date") for r in data if cf(r, "Target date"))
    middle = datetime.fromisoformat(dated[len(dated) // 2])
    falcon = {r["key"] for r in data if cf(r, "Team") == "Falcon"}

    async def go() -> dict[str, set[str]]:
        async with store(kind, tmp_path) as s:
            embedder = WordsEmbedder()
            await sync(s, data, embedder)
            return {
                "big": await keys_for(s, embedder, "Story Points>=5"),
                "exact": await keys_for(s, embedder, "story  points = 2.5"),  # any case and spacing
                "falcon": await keys_for(s, embedder, "Team=Falcon"),
                "before": await keys_for(s, embedder, f"Target date<{middle.date().isoformat()}"),
                "day": await keys_for(s, embedder, f"Target date={middle.date().isoformat()}"),
                "both": await keys_for(s, embedder, "Team=Falcon", "Story Points<5"),
            }

    out = asyncio.run(go())
    day = middle.replace(tzinfo=UTC)

    def target(r: dict[str, Any]) -> datetime | None:
        value = cf(r, "Target date")
        return datetime.fromisoformat(value) if value else None

    assert out["big"] == {r["key"] for r in points if cf(r, "Story Points") >= 5} and out["big"]
    assert out["exact"] == {r["key"] for r in points if cf(r, "Story Points") == 2.5} and out["exact"]
    assert out["falcon"] == falcon and falcon
    before = {r["key"] for r in data if (t := target(r)) is not None and t < day}
    assert out["before"] == before and 0 < len(before) < len(dated)
    on_day = {r["key"] for r in data if (t := target(r)) is not None and day <= t < day + timedelta(days=1)}
    assert out["day"] == on_day and on_day
    small = {r["key"] for r in points if cf(r, "Story Points") < 5}
    assert out["both"] == falcon & small and out["both"]


@pytest.mark.parametrize("kind", ["server", "local"])
def test_a_filter_search_cannot_serve_is_one_line_naming_what_can(kind: str, tmp_path: Path) -> None:
    data = rows(60)

    async def go() -> dict[str, str]:
        out: dict[str, str] = {}
        async with store(kind, tmp_path) as s:
            embedder = WordsEmbedder()
            await sync(s, data, embedder)
            for label, text in (
                ("text field", "Root cause=certificate"),  # configured, but its values are text, not one value
                ("unknown", "Severity=High"),
                ("range on text", "Team>=Falcon"),
                ("not a number", "Story Points=five"),
                ("not a date", "Target date<next week"),
            ):
                with pytest.raises(InvalidRequestError) as err:
                    await keys_for(s, embedder, text)
                out[label] = str(err.value)
            before = embedder.requests
            with pytest.raises(InvalidRequestError):
                await keys_for(s, embedder, "Severity=High")
            out["embedded"] = str(embedder.requests - before)
        return out

    out = asyncio.run(go())
    for label in ("text field", "unknown"):
        assert out[label].startswith("cannot filter on custom field"), out[label]
        assert f"{NAME} has no payload index" in out[label]
        assert "filterable: Area, Customer contact, Runbook URL, Story Points, Target date, Team);" in out[label]
    assert "'Team' holds text: filter it with '='" in out["range on text"]
    assert "'Story Points' holds numbers: 'five' is not one" in out["not a number"]
    assert "'Target date' holds dates: 'next week' is not an ISO 8601 date" in out["not a date"]
    assert all("\n" not in message for message in out.values())
    assert out["embedded"] == "0"  # refused before the query was embedded


@pytest.mark.parametrize("text", ["Story Points", "=5", "Team=", "   "])
def test_a_filter_that_is_not_name_op_value_is_refused(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="is not NAME=VALUE"):
        FieldFilter.parse(text)


def test_a_collection_built_before_custom_field_indexes_gets_them_without_re_embedding(tmp_path: Path) -> None:
    data = rows(60)
    before_filters = dataclasses.replace(ISSUES, row_filters=None)  # the issues spec as it was

    async def go() -> tuple[set[str], VectorSyncResult, int, set[str]]:
        async with store("server", tmp_path) as s:
            embedder = WordsEmbedder()
            await sync(s, data, embedder, spec=before_filters)
            old = {k for k in await s.indexes() if k.startswith("cf_")}
            requests = embedder.requests
            result = await sync(s, data, embedder)
            return old, result, embedder.requests - requests, {k for k in await s.indexes() if k.startswith("cf_")}

    old, result, embedded, now = asyncio.run(go())
    assert old == set() and now == set(EXPECTED)
    assert result.payload_indexes_created == len(EXPECTED) and result.rows_changed == 0 and embedded == 0


def test_an_index_the_record_names_but_the_server_lost_is_created_again(tmp_path: Path) -> None:
    data = rows(60)

    async def go() -> set[str]:
        async with store("server", tmp_path) as s:
            embedder = WordsEmbedder()
            await sync(s, data, embedder)
            assert s.server is not None
            del s.server.indexes[NAME]["cf_story_points"]  # e.g. deleted by hand in the server
            await Collection(s.client, NAME, TENANT, "issues").ensure(
                model=embedder.model, dimensions=embedder.dimensions, indexes=dict(ISSUES.payload_indexes)
            )
            return {k for k in await s.indexes() if k.startswith("cf_")}

    assert asyncio.run(go()) == set(EXPECTED)


def test_a_local_mode_folder_migrated_to_edge_keeps_its_custom_field_indexes() -> None:
    record = {k: {"kind": t.value, "name": n} for k, (t, n) in EXPECTED.items()}
    wanted = migrated_payload_indexes({"entity": "issues", ROW_FILTERS_KEY: record})
    assert {k: v for k, v in wanted.items() if k.startswith("cf_")} == {k: t for k, (t, _) in EXPECTED.items()}
    assert wanted["updated"] == T.DATETIME
