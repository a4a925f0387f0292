"""A loopback HTTP/1.1 server on real sockets for tests and benchmarks.

:class:`LoopbackServer` runs uvicorn (HTTP/1.1 with keep-alive, stdlib asyncio loop) in a
daemon thread with its own event loop and serves a plain Python *handler*::

    def handler(req: Request) -> Response:
        return Response.json({"ok": True})

    with LoopbackServer(handler) as server:
        httpx.get(server.url + "/anything")

The handler runs on the server's event loop thread. It may be a plain function or an
``async def``; it must not block for long (every connection shares that one loop). To
simulate latency return ``Response(..., delay_s=0.2)``: the delay is an ``asyncio.sleep``
before the response is written, so many requests can be in flight at once.

Fault injection (generic, works with any handler): append :class:`Fault` objects to
``server.faults``. Each request takes the *first* queued fault that matches it (path prefix
and optional method), removing it from the queue, so a fault fires exactly once:

* ``Fault.respond(status, body, headers)`` — answer with this instead of calling the handler
  (e.g. a 429 with ``retry-after``, a 503, or a 200 whose body is malformed JSON).
* ``Fault.delay(seconds)`` — wait, then serve normally (makes client read timeouts fire).
* ``Fault.reset()`` — abort the TCP connection with an RST and no response bytes.
* ``Fault.truncate(keep_bytes=None)`` — call the handler, send its status and headers with
  the full ``content-length`` but only the first ``keep_bytes`` of the body (default: half),
  then close the connection.

Every fault takes ``path=`` (prefix, default ``"/"`` = everything), ``method=`` (default
any) and, except ``delay``, ``delay_s=`` (wait before acting). ``respond`` and ``reset``
never call the handler (so a fake's own counters do not see that request); ``delay`` and
``truncate`` do. Clients see a reset as ``httpx.ReadError`` ("Connection reset by peer")
and a truncation as ``httpx.RemoteProtocolError``; the openai SDK wraps both in
``APIConnectionError`` (and a read timeout in ``APITimeoutError``).

Counters (thread-safe, cumulative over restarts): ``connections_opened`` counts TCP
connections accepted (from the protocol's ``connection_made``, so idle connections that
never send a request count too), ``connections_active`` those still open,
``requests_received`` complete requests read. ``handler_errors`` keeps exceptions raised
by the handler (each answered with a 500).

``stop()`` ends pending delays at once (such requests get their connection aborted, not a
response), closes every connection and joins the thread; one instance can be started again
after ``stop()`` (with ``port=0`` it gets a new port).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import json
import logging
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

__all__ = ["Fault", "FaultKind", "Handler", "LoopbackServer", "Request", "Response"]

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0
_DISCONNECT_WAIT_S = 2.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased; repeated headers joined with ", "
    body: bytes
    client: tuple[str, int] | None = None  # peer (host, port): identifies the TCP connection

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0  # non-blocking wait before the response is written

    @classmethod
    def json(
        cls,
        obj: Any,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        *,
        delay_s: float = 0.0,
    ) -> Response:
        merged = {"content-type": "application/json"}
        merged.update(headers or {})
        body = json.dumps(obj, separators=(",", ":")).encode()
        return cls(status=status, headers=merged, body=body, delay_s=delay_s)


Handler = Callable[[Request], "Response | Awaitable[Response]"]
FaultKind = Literal["respond", "delay", "reset", "truncate"]


@dataclass(frozen=True)
class Fault:
    """One-shot fault for the next request matching ``path`` (prefix) and ``method``."""

    kind: FaultKind
    path: str = "/"
    method: str | None = None
    delay_s: float = 0.0
    status: int = 500
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    keep_bytes: int | None = None

    def matches(self, request: Request) -> bool:
        if self.method is not None and self.method.upper() != request.method.upper():
            return False
        return request.path.startswith(self.path)

    @classmethod
    def respond(
        cls,
        status: int,
        body: bytes | str | dict[str, Any] | list[Any] = b"",
        headers: Mapping[str, str] | None = None,
        *,
        path: str = "/",
        method: str | None = None,
        delay_s: float = 0.0,
    ) -> Fault:
        """Serve this response instead of the handler's. A dict/list body is sent as JSON."""
        hdrs = dict(headers or {})
        if isinstance(body, dict | list):
            body = json.dumps(body).encode()
            hdrs.setdefault("content-type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        return cls("respond", path, method, delay_s, status, hdrs, body)

    @classmethod
    def delay(cls, seconds: float, *, path: str = "/", method: str | None = None) -> Fault:
        """Wait ``seconds`` (non-blocking), then serve the request normally."""
        return cls("delay", path, method, delay_s=seconds)

    @classmethod
    def reset(cls, *, path: str = "/", method: str | None = None, delay_s: float = 0.0) -> Fault:
        """Abort the connection with a TCP RST (SO_LINGER 0) without sending a response."""
        return cls("reset", path, method, delay_s=delay_s)

    @classmethod
    def truncate(
        cls,
        *,
        keep_bytes: int | None = None,
        path: str = "/",
        method: str | None = None,
        delay_s: float = 0.0,
    ) -> Fault:
        """Send the handler's status/headers but only part of its body, then close."""
        return cls("truncate", path, method, delay_s=delay_s, keep_bytes=keep_bytes)


def _tracked_protocol(owner: LoopbackServer) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools, else h11) reporting connects/disconnects."""

    class _TrackedProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            owner._connection_made(self.client, transport)

        def connection_lost(self, exc: Exception | None) -> None:
            owner._connection_lost(self.client, self.transport)
            super().connection_lost(exc)

    return _TrackedProtocol


class _Server(uvicorn.Server):
    """uvicorn.Server that reports start-up and wakes on an event instead of polling."""

    def __init__(self, config: uvicorn.Config, owner: LoopbackServer) -> None:
        super().__init__(config)
        self._owner = owner

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self._owner._started.set()

    async def main_loop(self) -> None:
        await self.on_tick(0)  # computes the default headers (server, date) once
        if not self.should_exit:
            await self._owner._stopping.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Same steps as uvicorn's shutdown, polling every 5 ms instead of its fixed 0.1 s
        # sleeps, so that tests starting many servers do not pay ~0.1 s per stop.
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle: close now; busy: close after the response
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(self.config.timeout_graceful_shutdown or 5)
        state = self.server_state
        while (state.connections or state.tasks) and not self.force_exit and loop.time() < deadline:
            await asyncio.sleep(0.005)
        for task in list(state.tasks):
            task.cancel(msg="LoopbackServer stopped")
        for connection in list(state.connections):
            connection.transport.abort()
        for server in self.servers:
            await server.wait_closed()
        await self.lifespan.shutdown()


class LoopbackServer:
    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        keep_alive_s: float = 75.0,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.keep_alive_s = keep_alive_s
        self.faults: collections.deque[Fault] = collections.deque()
        self.handler_errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._connections_opened = 0
        self._requests_received = 0
        self._transports: dict[tuple[str, int], asyncio.BaseTransport] = {}
        self._url: str | None = None
        self._thread: threading.Thread | None = None
        self._server: _Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event = None  # type: ignore[assignment]  # made on the loop
        self._started = threading.Event()
        self._thread_error: BaseException | None = None

    # -- public API ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("LoopbackServer is not running; call start() first")
        return self._url

    @property
    def running(self) -> bool:
        return self._url is not None

    @property
    def connections_opened(self) -> int:
        with self._lock:
            return self._connections_opened

    @property
    def connections_active(self) -> int:
        with self._lock:
            return len(self._transports)

    @property
    def requests_received(self) -> int:
        with self._lock:
            return self._requests_received

    def start(self) -> LoopbackServer:
        if self._thread is not None:
            raise RuntimeError("LoopbackServer already started")
        sock = self._bind()
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._asgi,
            http=_tracked_protocol(self),
            ws="none",
            lifespan="off",
            loop="asyncio",
            interface="asgi3",
            log_config=None,
            access_log=False,
            timeout_keep_alive=self.keep_alive_s,  # type: ignore[arg-type]  # call_later takes float
            timeout_graceful_shutdown=5,
        )
        self._server = _Server(config, self)
        self._started.clear()
        self._thread_error = None
        self._thread = threading.Thread(
            target=self._thread_main, args=(self._server, sock), name=f"loopback-{port}", daemon=True
        )
        self._thread.start()
        if not self._started.wait(_START_TIMEOUT_S) or not self._server.started:
            self._server.should_exit = True
            self._wake()
            self._thread.join(_STOP_TIMEOUT_S)
            error = self._thread_error
            self._reset_state()
            sock.close()  # no-op if uvicorn already owns and closed it
            raise RuntimeError("LoopbackServer failed to start") from error
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self._url = f"http://{shown}:{port}"
        return self

    def stop(self) -> None:
        thread, server = self._thread, self._server
        if thread is None or server is None:
            return
        self._url = None
        server.should_exit = True
        self._wake()
        thread.join(_STOP_TIMEOUT_S)
        if thread.is_alive():
            server.force_exit = True
            self._wake()
            thread.join(_STOP_TIMEOUT_S)
        self._reset_state()
        if thread.is_alive():
            raise RuntimeError("LoopbackServer thread did not stop")
        if self._thread_error is not None:
            raise RuntimeError("LoopbackServer thread failed") from self._thread_error

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<LoopbackServer {self._url or 'stopped'}>"

    # -- thread / loop plumbing ---------------------------------------------------------

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP, and without it Nagle + delayed ACK add ~40 ms per keep-alive request.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except BaseException:
            sock.close()
            raise
        return sock

    def _thread_main(self, server: _Server, sock: socket.socket) -> None:
        try:
            asyncio.run(self._serve(server, sock))
        except BaseException as exc:  # noqa: BLE001 - reported by start()/stop(); SystemExit from uvicorn too
            self._thread_error = exc
        finally:
            sock.close()
            self._started.set()

    async def _serve(self, server: _Server, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        await server.serve(sockets=[sock])

    def _wake(self) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._stopping.set)
        except RuntimeError:  # loop already closed
            pass

    def _reset_state(self) -> None:
        self._thread = None
        self._server = None
        self._loop = None
        with self._lock:
            self._transports.clear()

    def _connection_made(self, client: tuple[str, int] | None, transport: asyncio.BaseTransport) -> None:
        with self._lock:
            self._connections_opened += 1
            if client is not None:
                self._transports[client] = transport

    def _connection_lost(self, client: tuple[str, int] | None, transport: asyncio.BaseTransport) -> None:
        with self._lock:
            if client is not None and self._transports.get(client) is transport:
                del self._transports[client]

    # -- ASGI app ----------------------------------------------------------------------

    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        client = tuple(scope["client"]) if scope.get("client") else None
        request = Request(
            method=scope["method"],
            path=scope["path"],
            query=dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)),
            headers=headers,
            body=b"".join(chunks),
            client=client,
        )
        with self._lock:
            self._requests_received += 1
        fault = self._take_fault(request)

        if fault is not None and fault.delay_s > 0 and not await self._sleep(fault.delay_s):
            return await self._abort(client, receive)
        if fault is not None and fault.kind == "reset":
            return await self._abort(client, receive)
        if fault is not None and fault.kind == "respond":
            response = Response(fault.status, dict(fault.headers), fault.body)
        else:
            response = await self._call_handler(request)
        if response.delay_s > 0 and not await self._sleep(response.delay_s):
            return await self._abort(client, receive)

        body = response.body
        out_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
        if not any(name == b"content-length" for name, _ in out_headers):
            out_headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": out_headers})
        if fault is not None and fault.kind == "truncate":
            keep = len(body) // 2 if fault.keep_bytes is None else max(0, min(fault.keep_bytes, len(body) - 1))
            await send({"type": "http.response.body", "body": body[:keep], "more_body": True})
            transport = self._transport_for(client)
            if transport is not None:
                transport.close()  # FIN after the partial body has been flushed
                await self._wait_disconnect(receive)
            return None
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return None

    def _take_fault(self, request: Request) -> Fault | None:
        with self._lock:
            for fault in list(self.faults):  # list() is atomic; tests append from other threads
                if fault.matches(request):
                    try:
                        self.faults.remove(fault)
                    except ValueError:  # cleared by another thread meanwhile
                        continue
                    return fault
        return None

    async def _call_handler(self, request: Request) -> Response:
        try:
            result = self.handler(request)
            if inspect.isawaitable(result):
                result = await result
            if not isinstance(result, Response):
                raise TypeError(f"handler returned {type(result).__name__}, expected Response")
            return result
        except Exception as exc:
            logger.exception("LoopbackServer handler failed for %s %s", request.method, request.path)
            with self._lock:
                self.handler_errors.append(exc)
            text = f"loopback handler error: {type(exc).__name__}: {exc}"
            return Response(500, {"content-type": "text/plain; charset=utf-8"}, text.encode())

    async def _sleep(self, seconds: float) -> bool:
        """Sleep without blocking the loop; False if the server started stopping meanwhile."""
        if self._stopping.is_set():
            return False
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return True
        return False

    def _transport_for(self, client: tuple[str, int] | None) -> asyncio.BaseTransport | None:
        with self._lock:
            return self._transports.get(client) if client is not None else None

    async def _abort(self, client: tuple[str, int] | None, receive: Any) -> None:
        """Drop the connection with an RST (no response bytes); see module docstring."""
        transport = self._transport_for(client)
        if transport is None or transport.is_closing():
            return  # already gone (client hung up); nothing to send
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass  # plain close (FIN) instead of RST
        transport.abort()  # type: ignore[attr-defined]
        await self._wait_disconnect(receive)

    @staticmethod
    async def _wait_disconnect(receive: Any) -> None:
        # uvicorn marks the cycle disconnected in connection_lost (scheduled by close/abort);
        # returning before that would make it log "returned without starting response".
        try:
            await asyncio.wait_for(receive(), _DISCONNECT_WAIT_S)
        except TimeoutError:
            pass
