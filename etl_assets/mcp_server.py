"""``etl-assets mcp``: a Model Context Protocol server over the search API, for agents and apps.

Built on the official Python SDK (``mcp`` 2.x, ``MCPServer``), over stdio or streamable HTTP.
Tools: ``search_issues``, ``get_issue``, ``list_projects``, ``list_tenants`` — thin wrappers
around :class:`etl_assets.core.search.SearchService`, which is opened once per server and
closed inside the server's own event loop on shutdown (DESIGN.md, guarantee 2).

Identity: every call runs as a :class:`~etl_assets.core.search.Principal`. Over stdio the
principal and its tenants are fixed by the server's configuration; over HTTP each client
presents a bearer token that the configuration maps (by the NAME of the environment variable
holding it, never the token itself) to a principal and a tenant set. Unknown tokens get a 401.
An HTTP server without authentication refuses to bind anything but loopback.

Limits: result count, query length, a per-client request rate and a per-call timeout. Every
failure reaches the caller as an MCP tool error with a sentence it can act on; never a stack
trace, never a secret. See docs/mcp.md.
"""

# No `from __future__ import annotations`: the SDK reads the tools' annotations at runtime,
# and the tools are defined inside build_server with limits known only then.
import argparse
import asyncio
import collections
import contextlib
import hmac
import ipaddress
import logging
import os
import signal
import stat
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import uvicorn
import yaml
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.stdio import stdio_server
from mcp.types import ToolAnnotations
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from etl_assets.core.catalogue import BY_NAME, SOURCE_BY_NAME
from etl_assets.core.errors import ConfigError
from etl_assets.core.search import (
    MAX_COMMENTS,
    PASSAGE_CHARS,
    FieldFilter,
    IssueDetail,
    IssueFilters,
    Principal,
    ProjectInfo,
    SearchError,
    SearchMode,
    SearchResult,
    SearchService,
    TenantInfo,
    issue_url,
    search_sources,
)
from etl_assets.core.vectorstore import QdrantLockTimeout, QdrantServerError

# The sources a search may be narrowed to, as an enum the tool's input schema lists: the catalogue's.
SOURCE_NAMES = tuple(SOURCE_BY_NAME)
SourceName = StrEnum("SourceName", {name: name for name in SOURCE_NAMES})  # type: ignore[misc]

log = logging.getLogger("etl_assets.mcp")

T = TypeVar("T")
DEFAULT_PORT = 8765
MIN_TOKEN_CHARS = 24
ALL_TENANTS = "*"


class McpConfigError(ConfigError):
    """The MCP server's configuration is wrong; the message names the file, key or variable."""


# -- configuration -------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    max_results: int = Field(default=50, ge=1, le=500, description="most hits one search_issues call returns")
    max_query_chars: int = Field(default=2000, ge=16, le=100_000, description="longest query accepted")
    requests_per_minute: int = Field(default=120, ge=1, description="tool calls per client per rolling minute")
    timeout_s: float = Field(default=30.0, gt=0, le=600, description="longest one tool call may take")


class Identity(_Strict):
    """A principal, the tenants it may use (``'*'``: every tenant in the registry) and whose access
    it has within them: the Jira user ``jira_user`` (e-mail or accountId); without one, only what
    Jira shows anyone; ``unrestricted: true`` (operators' tools only) no access filter at all."""

    principal: str = Field(min_length=1, max_length=200)
    tenants: tuple[str, ...] = Field(min_length=1)
    jira_user: str | None = Field(default=None, min_length=1, max_length=200)
    unrestricted: bool = False

    @model_validator(mode="after")
    def _one_access(self) -> "Identity":
        if self.unrestricted and self.jira_user:
            raise ValueError("jira_user and unrestricted exclude each other")
        return self


class HttpClient(Identity):
    """One HTTP client: its bearer token is read from the environment variable ``token_env``."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    token_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class McpConfig(_Strict):
    """The file passed with ``--config`` (YAML); every part is optional."""

    stdio: Identity | None = None
    http_clients: tuple[HttpClient, ...] = ()
    limits: Limits = Limits()

    @field_validator("http_clients")
    @classmethod
    def _unique(cls, clients: tuple[HttpClient, ...]) -> tuple[HttpClient, ...]:
        names = [c.name for c in clients]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"client names must be unique: {', '.join(dupes)}")
        return clients


def load_config(path: Path | None) -> McpConfig:
    """The configuration in ``path`` (YAML), or the defaults; :class:`McpConfigError` naming what is wrong."""
    if path is None:
        return McpConfig()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise McpConfigError(f"MCP config {path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    except yaml.YAMLError:
        raise McpConfigError(f"MCP config {path}: not valid YAML") from None
    try:
        return McpConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'top level'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise McpConfigError(f"MCP config {path}: {problems}") from None


@dataclass(frozen=True)
class Client:
    """A configured HTTP client with its token, read from the environment at start."""

    name: str
    token: str
    principal: Principal


def _principal(identity: Identity, known: list[str], where: str) -> Principal:
    tenants = known if ALL_TENANTS in identity.tenants else list(identity.tenants)
    unknown = [t for t in tenants if t not in known]
    if unknown:
        raise McpConfigError(f"{where}: tenant {unknown[0]!r} unknown; known: {', '.join(known)}")
    if identity.unrestricted:
        log.warning("%s: principal %r searches unrestricted (no access filter)", where, identity.principal)
    return Principal(
        identity.principal, frozenset(tenants), jira_user=identity.jira_user, unrestricted=identity.unrestricted
    )


def http_clients(config: McpConfig, known: list[str], environ: Mapping[str, str]) -> list[Client]:
    """The HTTP clients with their tokens; a missing or short token is an error naming its variable."""
    out = []
    seen: dict[str, str] = {}
    for c in config.http_clients:
        token = environ.get(c.token_env, "")
        if not token:
            raise McpConfigError(f"http client {c.name!r}: environment variable {c.token_env} is not set")
        if len(token) < MIN_TOKEN_CHARS:
            raise McpConfigError(
                f"http client {c.name!r}: the token in {c.token_env} is shorter than {MIN_TOKEN_CHARS} characters"
            )
        if token in seen:
            raise McpConfigError(f"http clients {seen[token]!r} and {c.name!r} share one token; give each its own")
        seen[token] = c.name
        out.append(Client(c.name, token, _principal(c, known, f"http client {c.name!r}")))
    return out


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- guard rails ------------------------------------------------------------------------------------------


class RateLimiter:
    """At most ``per_minute`` calls per client in any rolling 60 s window.

    Hand-written because it is a dozen lines over a deque and runs on the server's one loop;
    a library's async limiter would wait for a slot, where a model is better told to retry.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._calls: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def check(self, client: str) -> float | None:
        """None if the call may proceed (and count it), else seconds until it would."""
        now = self._clock()
        calls = self._calls[client]
        while calls and now - calls[0] >= 60.0:
            calls.popleft()
        if len(calls) >= self.per_minute:
            return 60.0 - (now - calls[0])
        calls.append(now)
        return None


class _Scrubber:
    """Removes known secret values from text bound for the log."""

    def __init__(self, secrets: list[str]) -> None:
        self._secrets = [s for s in secrets if s and len(s) >= 4]

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


# -- the server ---------------------------------------------------------------------------------------------


@dataclass
class _Runtime:
    service: SearchService
    limits: Limits
    limiter: RateLimiter
    scrub: _Scrubber
    # stdio / unauthenticated loopback HTTP: one fixed principal. Authenticated HTTP: by client name.
    fixed: Principal | None
    clients: dict[str, Client]

    def caller(self) -> tuple[str, Principal]:
        token = get_access_token()
        if token is not None and token.client_id in self.clients:
            return token.client_id, self.clients[token.client_id].principal
        if self.fixed is not None and not self.clients:
            return "local", self.fixed
        # Unreachable behind the bearer middleware; refuse rather than guess an identity.
        raise ToolError("not authenticated: send the bearer token this server gave you")

    def _failed(self, tool: str, principal: Principal, exc: BaseException) -> ToolError:
        """Log an unexpected failure under an incident id (secrets masked); the caller gets the id only."""
        incident = uuid.uuid4().hex[:8]
        detail = self.scrub(str(exc))[:500]
        log.error("%s by %s failed [incident %s]: %s: %s", tool, principal.id, incident, type(exc).__name__, detail)
        return ToolError(f"{tool} failed on the server (incident {incident}); retry later, or ask an operator")

    async def run(self, tool: str, call: Callable[[Principal], Awaitable[T]]) -> T:
        """Run one tool call as its caller, within the rate limit and the timeout; errors become tool errors."""
        client, principal = self.caller()
        wait = self.limiter.check(client)
        if wait is not None:
            raise ToolError(
                f"rate limit: at most {self.limiter.per_minute} calls per minute for this client; retry in {wait:.0f} s"
            )
        started = time.perf_counter()
        deadline = asyncio.timeout(self.limits.timeout_s)
        try:
            async with deadline:
                result = await call(principal)
        except SearchError as exc:
            log.info("%s by %s refused: %s", tool, principal.id, exc)
            raise ToolError(str(exc)) from None
        except ToolError:
            raise
        except TimeoutError as exc:
            if not deadline.expired():  # a library's own TimeoutError, not our deadline
                raise self._failed(tool, principal, exc) from None
            log.warning("%s by %s timed out after %.0f s", tool, principal.id, self.limits.timeout_s)
            raise ToolError(
                f"{tool} took longer than {self.limits.timeout_s:.0f} s and was stopped; retry, or narrow the request"
            ) from None
        except Exception as exc:  # noqa: BLE001 - the boundary: the caller gets a sentence, the log the details
            raise self._failed(tool, principal, exc) from None
        log.info("%s by %s in %.0f ms", tool, principal.id, 1000 * (time.perf_counter() - started))
        return result


def _parse_time(name: str, value: str | None) -> datetime | None:
    if value is None or not value.strip():
        return None
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ToolError(
            f"{name} {value!r} is not a date: use ISO 8601, e.g. 2026-03-01 or 2026-03-01T12:00:00Z"
        ) from None


_DESCRIPTION = {
    "search_issues": (
        "Search one tenant's Jira issues by meaning and by exact words (hybrid search over the synced "
        "index, issues and their comments). Returns hits best first, one per issue: key, summary, status, "
        "URL, score and the passage that matched; when a comment matched best, comment_author and "
        "comment_created say whose comment and when. An issue whose key the query names comes first. No hits "
        "with a notice means no good match. Filters narrow the search before ranking. Use get_issue for the whole issue."
    ),
    "get_issue": (
        "The whole issue as last synced from Jira (not live): description, fields, people, dates, links "
        "(parent, sub-tasks, children, blocks/duplicates...), configured custom fields, a history digest "
        f"(status moves, reopenings, assignees) and the newest {MAX_COMMENTS} comments with author and date. "
        "comments_older counts older comments not returned; comments_restricted counts comments you may not see."
    ),
    "search_all": (
        "Search one tenant's Jira issues and GitHub issues and pull requests together (or only the "
        "sources you name). Returns hits best first, one per item: source, kind, key, title, state, URL, "
        "score and the passage that matched. For Jira filters (project, status, dates) use search_issues."
    ),
    "list_projects": "The tenant's Jira projects (key, name, lead, issue count), from the synced tables.",
    "list_tenants": "The tenants (Jira sites) you may search. Pass a tenant's id as `tenant` to the other tools.",
}


class SourceHitOut(BaseModel):
    source: str = Field(description="jira or github")
    kind: str = Field(description="issue, comment, pull request ...")
    key: str = Field(description="Jira key (ABC-123) or GitHub owner/repo#number")
    title: str
    state: str | None = Field(default=None, description="Jira status or GitHub state")
    url: str | None = None
    score: float = Field(description="higher is better; compare scores within one answer only")
    passage: str = Field(description="the indexed text that matched best (shortened)")


class SourcesResult(BaseModel):
    tenant: str
    mode: SearchMode
    hits: list[SourceHitOut]


def _short(text: Any) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= PASSAGE_CHARS else text[: PASSAGE_CHARS - 1].rstrip() + "…"


def build_server(
    runtime: _Runtime, *, token_verifier: "StaticTokens | None" = None, issuer_url: str | None = None
) -> MCPServer[Any]:
    """The MCPServer with its five tools bound to ``runtime``."""
    auth = None
    if token_verifier is not None:
        # Static bearer tokens: this server is its own issuer and publishes no OAuth metadata
        # (resource_server_url None), so issuer_url only satisfies the settings model.
        auth = AuthSettings(issuer_url=AnyHttpUrl(issuer_url or "http://127.0.0.1"), resource_server_url=None)
    server: MCPServer[Any] = MCPServer(
        "etl-assets",
        instructions=(
            "Search and read the Jira issues indexed by etl-assets. Start with list_tenants when you do "
            "not know the tenant; search_issues finds issues by meaning and exact words; get_issue reads one in full."
        ),
        token_verifier=token_verifier,
        auth=auth,
        log_level="WARNING",
    )
    limits = runtime.limits
    read_only = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
    Tenant = Annotated[
        str | None, Field(description="tenant id from list_tenants; may be left out when you have only one")
    ]

    def _check_size(query: str, limit: int) -> None:
        if len(query) > limits.max_query_chars:
            raise ToolError(
                f"query is {len(query)} characters long; at most {limits.max_query_chars} are accepted: shorten it"
            )
        if not 1 <= limit <= limits.max_results:
            raise ToolError(f"limit must be between 1 and {limits.max_results}, got {limit}")

    async def search_issues(
        query: Annotated[
            str, Field(description=f"what you are looking for, in words (at most {limits.max_query_chars} characters)")
        ],
        tenant: Tenant = None,
        project: Annotated[str | None, Field(description="only this project key, e.g. ABC")] = None,
        issue_type: Annotated[str | None, Field(description="only this work item type, e.g. Bug")] = None,
        status_category: Annotated[
            Literal["new", "indeterminate", "done"] | None,
            Field(description="only this status category: new (to do), indeterminate (in progress), done"),
        ] = None,
        assignee: Annotated[str | None, Field(description="only issues assigned to this display name")] = None,
        updated_after: Annotated[
            str | None, Field(description="only issues updated at or after this ISO 8601 date or time (UTC)")
        ] = None,
        updated_before: Annotated[
            str | None, Field(description="only issues updated before this ISO 8601 date or time (UTC)")
        ] = None,
        custom_fields: Annotated[
            list[Annotated[str, Field(max_length=500)]] | None,
            Field(
                description="only issues whose custom fields (the tenant's configured ones, by name) match every "
                "filter: 'Team=Falcon' (text: '=' only, exact value), 'Story Points>=5', 'Target date<2026-07-01' "
                "(numbers and dates: =, >=, >, <=, <)",
                max_length=20,
            ),
        ] = None,
        mode: Annotated[
            SearchMode,
            Field(
                description="ranking: 'hybrid' (default: meaning and exact words such as keys, class names, "
                "error codes, fused), 'dense' (meaning only) or 'sparse' (exact words only, BM25)"
            ),
        ] = SearchMode.HYBRID,
        limit: Annotated[int, Field(description=f"number of hits, 1 to {limits.max_results}")] = 10,
    ) -> SearchResult:
        _check_size(query, limit)
        try:
            custom = tuple(FieldFilter.parse(text) for text in custom_fields or ())
        except SearchError as exc:
            raise ToolError(str(exc)) from None
        filters = IssueFilters(
            project=project or None,
            issue_type=issue_type or None,
            status_category=status_category,
            assignee=assignee or None,
            updated_after=_parse_time("updated_after", updated_after),
            updated_before=_parse_time("updated_before", updated_before),
            custom_fields=custom,
        )
        return await runtime.run(
            "search_issues",
            lambda p: runtime.service.search_issues(p, query, tenant=tenant, filters=filters, mode=mode, limit=limit),
        )

    async def get_issue(
        key: Annotated[str, Field(description="the issue key, e.g. ABC-123", max_length=64)],
        tenant: Tenant = None,
    ) -> IssueDetail:
        return await runtime.run("get_issue", lambda p: runtime.service.get_issue(p, key, tenant=tenant))

    async def search_all(
        query: Annotated[
            str, Field(description=f"what you are looking for, in words (at most {limits.max_query_chars} characters)")
        ],
        tenant: Tenant = None,
        sources: Annotated[
            list[SourceName] | None,
            Field(description=f"only these sources ({', '.join(SOURCE_NAMES)}); default: all the tenant has"),
        ] = None,
        mode: Annotated[
            SearchMode, Field(description="ranking: 'hybrid' (default), 'dense' (meaning) or 'sparse' (exact words)")
        ] = SearchMode.HYBRID,
        limit: Annotated[int, Field(description=f"number of hits, 1 to {limits.max_results}")] = 10,
    ) -> SourcesResult:
        _check_size(query, limit)

        async def call(p: Principal) -> SourcesResult:
            chosen = runtime.service.tenant_for(p, tenant)
            found = await search_sources(
                runtime.service.client,
                runtime.service.embedder,
                query,
                tenant_id=chosen.id,
                access=await runtime.service.access_for(p, chosen),
                sources=sorted({str(s) for s in sources}) if sources else None,
                k=limit,
                mode=mode,
            )
            hits = [
                SourceHitOut(
                    source=h.source,
                    kind=BY_NAME[h.entity].item,
                    key=h.key,
                    title=h.title,
                    state=h.payload.get("state") or h.payload.get("status"),
                    url=h.payload.get("url") or (issue_url(chosen, h.key) if h.source == "jira" else None),
                    score=h.score,
                    passage=_short(h.payload.get("text")),
                )
                for h in found
            ]
            return SourcesResult(tenant=chosen.id, mode=mode, hits=hits)

        return await runtime.run("search_all", call)

    class Projects(BaseModel):
        tenant: str
        projects: list[ProjectInfo]

    async def list_projects(tenant: Tenant = None) -> Projects:
        async def call(p: Principal) -> Projects:
            chosen = runtime.service.tenant_for(p, tenant)
            return Projects(tenant=chosen.id, projects=await runtime.service.list_projects(p, tenant=chosen.id))

        return await runtime.run("list_projects", call)

    class Tenants(BaseModel):
        tenants: list[TenantInfo]

    async def list_tenants() -> Tenants:
        async def call(p: Principal) -> Tenants:
            return Tenants(tenants=runtime.service.list_tenants(p))

        return await runtime.run("list_tenants", call)

    for fn in (search_issues, search_all, get_issue, list_projects, list_tenants):
        server.add_tool(fn, description=_DESCRIPTION[fn.__name__], annotations=read_only)
    return server


class StaticTokens:
    """The SDK's TokenVerifier over the configured clients' tokens (constant-time comparison)."""

    def __init__(self, clients: list[Client]) -> None:
        self._clients = clients

    async def verify_token(self, token: str) -> AccessToken | None:
        match = None
        for client in self._clients:
            # Every token is compared, so the time taken does not tell which one came close.
            if hmac.compare_digest(client.token.encode(), token.encode()):
                match = client
        if match is None:
            return None
        return AccessToken(token=token, client_id=match.name, scopes=[], subject=match.principal.id)


# -- running --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _on_stop_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Call ``stop`` on SIGTERM/SIGINT, from the running loop; restore the handlers after."""
    loop = asyncio.get_running_loop()
    sigs = (signal.SIGTERM, signal.SIGINT)
    for sig in sigs:
        loop.add_signal_handler(sig, stop)
    try:
        yield
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)


class _LinesFromPipe:
    """stdin as async lines, read by the event loop itself.

    Why not the SDK's default: it reads stdin in a worker thread that a cancellation cannot
    interrupt, so on SIGTERM the server would wait for the client's next line before it could
    close anything.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> "_LinesFromPipe":
        return self

    async def __anext__(self) -> str:
        line = await self._reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


async def _serve_stdio(server: MCPServer[Any]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport = None
    stdin: Any = None  # the SDK's own reader, for a file or a terminal
    mode = os.fstat(sys.stdin.fileno()).st_mode
    # Only a pipe or a socket (what MCP clients give): the loop makes the descriptor non-blocking,
    # which on a terminal would outlive the process and upset the shell.
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        stdin = _LinesFromPipe(reader)
    task = asyncio.current_task()
    assert task is not None
    signalled = False

    def stop() -> None:
        nonlocal signalled
        signalled = True
        task.cancel()

    try:
        with _on_stop_signals(stop):
            async with stdio_server(stdin=stdin) as (read_stream, write_stream):
                low = server._lowlevel_server  # the SDK's run_stdio_async, with our stdin reader
                await low.run(read_stream, write_stream, low.create_initialization_options())
    except asyncio.CancelledError:
        if not signalled:
            raise
        task.uncancel()
        log.info("stopping on a signal")
    finally:
        if transport is not None:
            transport.close()


class _UvicornServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises a caught SIGTERM after serve() returns, which would end the process
        # before the search service is closed; _on_stop_signals handles the signals instead.
        yield


async def _serve_http(server: MCPServer[Any], host: str, port: int) -> None:
    app = server.streamable_http_app(host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    http = _UvicornServer(config)

    def stop() -> None:
        http.should_exit = True

    with _on_stop_signals(stop):
        serve = asyncio.create_task(http.serve())
        # uvicorn has no "started" event to await; the bound port (--port 0) is known only then.
        while not http.started and not serve.done():
            await asyncio.sleep(0.02)
        if http.started:
            bound = [s.getsockname()[1] for srv in http.servers for s in srv.sockets]
            log.warning("etl-assets MCP server listening on http://%s:%d/mcp", host, bound[0])
        await serve


async def serve(
    *,
    transport: Literal["stdio", "http"],
    config: McpConfig,
    fixed: Principal | None,
    clients: list[Client],
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    service_factory: Callable[[], contextlib.AbstractAsyncContextManager[SearchService]] | None = None,
    secrets: list[str] | None = None,
) -> None:
    """Open the search service, serve until stdin closes or a stop signal, then close it in this loop."""
    factory = service_factory or SearchService.open
    async with factory() as service:
        runtime = _Runtime(
            service=service,
            limits=config.limits,
            limiter=RateLimiter(config.limits.requests_per_minute),
            scrub=_Scrubber([c.token for c in clients] + (secrets or [])),
            fixed=fixed,
            clients={c.name: c for c in clients},
        )
        if transport == "stdio":
            await _serve_stdio(build_server(runtime))
        else:
            verifier = StaticTokens(clients) if clients else None
            await _serve_http(
                build_server(runtime, token_verifier=verifier, issuer_url=f"http://{host}:{port}"), host, port
            )
    log.warning("etl-assets MCP server stopped; search service closed")


def _password(database_url: str) -> str | None:
    from sqlalchemy import make_url

    try:
        return make_url(database_url).password
    except Exception:  # noqa: BLE001 - an unparsable URL fails later, with its own message
        return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="etl-assets mcp",
        description="Serve the search API to agents over the Model Context Protocol (see docs/mcp.md).",
    )
    p.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    p.add_argument("--config", type=Path, default=os.environ.get("ETL_MCP_CONFIG") or None, help="YAML (docs/mcp.md)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP: address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"HTTP: port (default {DEFAULT_PORT}; 0 = any)")
    p.add_argument("--principal", help="stdio, or HTTP with --no-auth: who the calls run as")
    p.add_argument("--tenant", action="append", help="with --principal: a tenant it may use (repeatable; '*' = all)")
    who = p.add_mutually_exclusive_group()
    who.add_argument(
        "--as", dest="as_user", metavar="USER", help="with --principal: search as this Jira user (e-mail or accountId)"
    )
    who.add_argument(
        "--unrestricted", action="store_true", help="with --principal: no access filter (operators only; logged)"
    )
    p.add_argument(
        "--no-auth", action="store_true", help="HTTP without bearer tokens: loopback addresses only, one principal"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """``etl-assets mcp``: 0 after a clean stop, 2 on a configuration error."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "mcp", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        from etl_assets.core.settings import Settings
        from etl_assets.core.tenants import TenantRegistry

        settings = Settings.load()
        registry = TenantRegistry.load(settings.tenants_file)
        config = load_config(args.config)
        known = registry.ids
        fixed = None
        if args.principal or args.tenant:
            if not (args.principal and args.tenant):
                raise McpConfigError("--principal and --tenant go together: name who calls and which tenants")
            identity = Identity(
                principal=args.principal,
                tenants=tuple(args.tenant),
                jira_user=args.as_user,
                unrestricted=args.unrestricted,
            )
            fixed = _principal(identity, known, "--tenant")
        elif config.stdio is not None:
            fixed = _principal(config.stdio, known, "stdio")
        clients: list[Client] = []
        if args.transport == "stdio":
            if fixed is None:
                raise McpConfigError("stdio needs an identity: --principal NAME --tenant ID, or stdio: in --config")
        elif args.no_auth:
            if not is_loopback(args.host):
                raise McpConfigError(
                    f"--no-auth binds loopback addresses only (127.0.0.1, ::1, localhost), not {args.host!r}; "
                    "configure http_clients with tokens to serve other hosts"
                )
            if fixed is None:
                raise McpConfigError("--no-auth needs an identity: --principal NAME --tenant ID")
        else:
            clients = http_clients(config, known, os.environ)
            if not clients:
                raise McpConfigError(
                    "HTTP needs http_clients (bearer tokens) in --config, or --no-auth on a loopback address"
                )
            fixed = None
    except (ConfigError, ValidationError, ValueError) as exc:
        sys.stderr.write(f"etl-assets mcp: {exc}\n")
        return 2
    secrets = [s for s in (settings.qdrant_api_key, settings.embedding.api_key, _password(settings.database)) if s]
    try:
        asyncio.run(
            serve(
                transport=args.transport,
                config=config,
                fixed=fixed,
                clients=clients,
                host=args.host,
                port=args.port,
                service_factory=lambda: SearchService.open(settings, registry),
                secrets=secrets,
            )
        )
    except (ConfigError, ValueError) as exc:  # e.g. an embedding setting, a DATABASE_URL that does not parse
        sys.stderr.write(f"etl-assets mcp: {exc}\n")
        return 2
    except (QdrantLockTimeout, QdrantServerError) as exc:  # their messages name the folder or QDRANT_URL
        sys.stderr.write(f"etl-assets mcp: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
