"""Collections: names that cannot be abused, ids that never change, models that never mix."""

from __future__ import annotations

import asyncio
import warnings

import pytest
from qdrant_client import AsyncQdrantClient

from etl_assets.core.embeddings.base import ModelMismatchError
from etl_assets.core.sources.jira.specs import ISSUES
from etl_assets.core.tenants import TenantConfigError
from etl_assets.core.vectorstore import (
    Collection,
    QdrantServerError,
    collection_name,
    display_url,
    point_id,
    server_errors_named,
)


def test_collection_names():
    assert collection_name("1", "projects") == "client_1_projects"
    for crafted in ("1_projects/../2", "2 issues", "", "a" * 49, "x;y", "1\n"):
        with pytest.raises(TenantConfigError):
            collection_name(crafted, "issues")


def test_point_ids_are_deterministic_and_distinct():
    a = point_id("1", "issues", "10001", 0)
    assert a == point_id("1", "issues", "10001", 0)
    others = {
        point_id("2", "issues", "10001", 0),
        point_id("1", "projects", "10001", 0),
        point_id("1", "issues", "10002", 0),
        point_id("1", "issues", "10001", 1),
    }
    assert a not in others and len(others) == 4


def test_point_ids_are_the_same_in_every_process_and_release():
    # Literals computed once from the definition, uuid5(POINT_NAMESPACE, "tenant\x1fentity\x1fid\x1fchunk")
    # with POINT_NAMESPACE = 5b0f8f0e-3c1e-5a8e-9f57-6574c2d1a001: a namespace drawn per process (or
    # a changed recipe) would orphan every stored point, and only a fixed value can show that.
    assert point_id("1", "issues", "10001", 0) == "86b192aa-406e-595b-8716-61317b7765f5"
    assert point_id("1", "issues", "10001", 1) == "bca5d031-e2f1-557e-b8df-461161a95655"
    assert point_id("2", "projects", "10000") == "521ed181-12b7-5ae0-a995-f8d11a3541bb"


def run(coro_fn):
    async def go():
        client = AsyncQdrantClient(location=":memory:")
        try:
            return await coro_fn(client)
        finally:
            await client.close()

    return asyncio.run(go())


def test_a_collection_records_its_model_and_refuses_another():
    async def scenario(client):
        c = Collection(client, "client_1_issues", "1", "issues", local=True)
        assert await c.ensure(model="m-a", dimensions=8) is True
        assert await c.ensure(model="m-a", dimensions=8) is False
        assert await c.model() == ("m-a", 8)
        with pytest.raises(ModelMismatchError, match="built with model 'm-a'"):
            await c.ensure(model="m-b", dimensions=8)
        with pytest.raises(ModelMismatchError, match="8 dimensions"):
            await c.ensure(model="m-a", dimensions=16)

    run(scenario)


class RecordingClient(AsyncQdrantClient):
    """The real local client, recording the payload indexes it is asked for (local mode keeps none)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.indexed: dict[str, object] = {}

    async def create_payload_index(self, collection_name, field_name, field_schema=None, **kwargs):
        self.indexed[field_name] = field_schema
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "payload indexes have no effect in the local Qdrant"
            return await super().create_payload_index(collection_name, field_name, field_schema=field_schema, **kwargs)


def test_server_collections_get_payload_indexes_for_filters_and_local_ones_none():
    async def scenario():
        server_like, local = RecordingClient(location=":memory:"), RecordingClient(location=":memory:")
        try:
            await Collection(server_like, "client_1_issues", "1", "issues", local=False).ensure(
                model="m", dimensions=8, indexes=dict(ISSUES.payload_indexes)
            )
            await Collection(local, "client_1_issues", "1", "issues", local=True).ensure(
                model="m", dimensions=8, indexes=dict(ISSUES.payload_indexes)
            )
            return server_like.indexed, local.indexed
        finally:
            await server_like.close()
            await local.close()

    indexed, local_indexed = asyncio.run(scenario())
    assert {"tenant_id", "external_id", "project_key", "status_category", "labels", "updated"} <= set(indexed)
    assert str(indexed["updated"]).lower().endswith("datetime")
    assert local_indexed == {}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://qdrant.internal:6333", "https://qdrant.internal:6333"),
        ("https://user:pa55word@qdrant.internal/prefix?api-key=SECRET#x", "https://qdrant.internal/prefix"),
        ("http://[::1]:6333/", "http://[::1]:6333/"),
    ],
)
def test_the_url_in_messages_carries_no_credentials(url, shown):
    assert display_url(url) == shown


def test_server_errors_name_the_url_and_keep_the_transport_cause():
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException

    async def failing(url):
        async with server_errors_named(url):
            try:
                raise httpx.ConnectError("All connection attempts failed")
            except httpx.ConnectError as exc:
                raise ResponseHandlingException(exc) from None

    with pytest.raises(QdrantServerError) as err:
        asyncio.run(failing("https://key:SECRET@qdrant.internal:6333"))
    message = str(err.value)
    assert message.startswith("Qdrant server QDRANT_URL=https://qdrant.internal:6333 failed: ResponseHandlingException")
    assert "All connection attempts failed" in message and "SECRET" not in message
    assert isinstance(err.value.__cause__, ResponseHandlingException)
    with pytest.raises(ResponseHandlingException):  # local mode: qdrant-client's error unchanged
        asyncio.run(failing(None))
