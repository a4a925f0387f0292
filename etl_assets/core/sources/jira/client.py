"""A small Jira Cloud REST v3 client on httpx: auth, timeouts, retries and pagination.

Every request has a timeout; the statuses in ``RETRY_STATUSES`` (408, 429 and the transient
5xx) and transport errors are retried within a bounded budget, honouring ``Retry-After``
where the server sends it and with exponential backoff and jitter where not; any other
status fails at once. Errors name the tenant, the site and the request — never the token.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from tenacity import RetryCallState, Retrying, nap, retry_if_exception, stop_after_attempt

from etl_assets.core.http import parse_retry_after, transport_reason
from etl_assets.core.records import RawPage

log = logging.getLogger(__name__)

# Statuses worth asking again: 408 (the server gave up waiting for our request), 429 (rate
# limited: Jira Cloud sends Retry-After), and 500/502/503/504 (Jira or its gateway overloaded,
# restarting or timing out). Anything else is the same answer next time: 400 a JQL or field
# the site refuses, 401/403 the credentials, 404 a wrong site URL, project or endpoint, 409 a
# conflicting change (we only read), 413/414 a request too large, 501 an endpoint the site
# does not have. Those fail the step at once with the status and Jira's own message.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class JiraError(RuntimeError):
    """A Jira request failed for good. The message names tenant, site and request."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class JiraAuthError(JiraError):
    pass


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class JiraStats:
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    waited_s: float = 0.0
    # The counts are bumped from the fan-out's threads too (``core.fanout``).
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, requests: int = 0, retries: int = 0, throttled: int = 0, waited_s: float = 0.0) -> None:
        with self._lock:
            self.requests += requests
            self.retries += retries
            self.throttled += throttled
            self.waited_s += waited_s


def _error_messages(response: httpx.Response) -> str:
    return _redact_credentials(_error_text(response), response)


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300].strip()
    if isinstance(data, dict):
        parts = list(data.get("errorMessages") or [])
        errors = data.get("errors")
        if isinstance(errors, dict):
            parts += [f"{k}: {v}" for k, v in errors.items()]
        if data.get("message"):
            parts.append(str(data["message"]))
        if parts:
            return "; ".join(str(p) for p in parts)[:500]
    return response.text[:300].strip()


def _redact_credentials(text: str, response: httpx.Response) -> str:
    """A server or proxy may echo the request's Authorization header in its error body: the message
    we raise must not carry it (nor its decoded e-mail:token, nor the token alone)."""
    try:
        auth = response.request.headers.get("authorization") or ""
    except RuntimeError:  # a response built without a request
        return text
    _, _, credentials = auth.partition(" ")
    secrets = [auth, credentials]
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        secrets += [decoded, decoded.partition(":")[2]]
    except (ValueError, UnicodeDecodeError):
        pass
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _parse(body: str) -> Any:
    """The body as JSON, by orjson: a fetch parses every answer once to find its follow-up pages
    and count its records, and with bulk fetches of ~1 MB that parse is most of a fan-out's CPU
    (orjson takes about half the standard library's time). What orjson refuses and the standard
    library reads (NaN, a lone surrogate) is read by the latter, which also gives every error. orjson reads integers beyond 64 bits as floats: harmless here, the
    parsed copy only pages and counts (ids are strings), and the table step parses the landed text
    with the standard library."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


@dataclass
class JiraClient:
    """Synchronous client for one tenant's site. Owns nothing; the caller closes ``http``."""

    http: httpx.Client
    tenant_id: str
    site: str
    max_attempts: int = 6
    max_wait_s: float = 60.0
    backoff_base_s: float = 0.5
    stats: JiraStats = field(default_factory=JiraStats)
    sleep: Callable[[float], None] | None = None  # injected by tests; tenacity's sleep by default
    # Told every answer's status and headers (retries included): the fan-out's adaptive limit.
    observe: Callable[[int, httpx.Headers], None] | None = None

    def describe(self, method: str, path: str) -> str:
        return f"tenant {self.tenant_id!r} site {self.site}: {method} {path}"

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            wait = retry_after
        else:
            wait = self.backoff_base_s * 2 ** (state.attempt_number - 1)
            wait = random.uniform(0, wait)  # full jitter keeps retrying tenants from stampeding
        wait = min(wait, self.max_wait_s)
        self.stats.add(retries=1, waited_s=wait)
        return wait

    def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json_body: Any = None
    ) -> RawPage:
        return self.request_parsed(method, path, params=params, json_body=json_body)[0]

    def request_parsed(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json_body: Any = None
    ) -> tuple[RawPage, Any]:
        """:meth:`request`, with the body as parsed when it was checked: a megabyte of issues costs
        tens of milliseconds to parse, so a caller that reads it uses this copy (its own). It is
        for paging and counting (see :func:`_parse`); what is landed is the body as it came."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        what = self.describe(method, path)

        def attempt() -> tuple[RawPage, Any]:
            self.stats.add(requests=1)
            try:
                with self.http.stream(method, path, params=params or None, json=json_body) as response:
                    if response.status_code >= 400:
                        response.read()  # what went wrong is in the body
                        content = b""
                    else:
                        # Into a buffer of ours, not the response's: an httpx Response is in a
                        # reference cycle (its stream points back at it), freed by the garbage
                        # collector only, and a megabyte body cached in it would live as long.
                        content = b"".join(response.iter_bytes())
            except httpx.TimeoutException as exc:
                raise _Retryable(f"{what}: timed out ({type(exc).__name__})", None) from None
            except httpx.TransportError as exc:
                raise _Retryable(f"{what}: connection failed ({transport_reason(exc)})", None) from None
            status = response.status_code
            if self.observe is not None:
                self.observe(status, response.headers)
            if status in (401, 403):
                raise JiraAuthError(
                    f"{what}: HTTP {status} — the credentials were refused or lack permission "
                    f"({_error_messages(response)})",
                    status=status,
                )
            if status in RETRY_STATUSES:
                if status == 429:
                    self.stats.add(throttled=1)
                raise _Retryable(
                    f"{what}: HTTP {status} ({_error_messages(response)})",
                    parse_retry_after(response.headers),
                )
            if status >= 400:
                raise JiraError(f"{what}: HTTP {status} — {_error_messages(response)}", status=status)
            body = content.decode(response.encoding or "utf-8", errors="replace")  # as ``response.text`` would
            try:
                parsed = _parse(body)
            except ValueError:
                # A truncated body is a transport fault more often than a real answer.
                raise _Retryable(f"{what}: response is not valid JSON ({len(body)} bytes)", None) from None
            except RecursionError:
                # Deterministic, so not retried: asking again returns the same page.
                raise JiraError(
                    f"{what}: response nests too deeply for the JSON decoder ({len(body)} bytes); "
                    "a record in it is malformed"
                ) from None
            page = RawPage(
                method, path, params | ({"body": json_body} if json_body else {}), status, body, datetime.now(UTC)
            )
            return page, parsed

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            reraise=True,
            sleep=self.sleep or nap.sleep,
        )
        try:
            return retrying(attempt)
        except _Retryable as exc:
            raise JiraError(f"{exc} — gave up after {self.max_attempts} attempts", retryable=True) from None

    # -- paginated endpoints -------------------------------------------------------------

    def offset_pages(
        self, path: str, *, params: dict[str, Any] | None = None, page_size: int = 50
    ) -> Iterator[RawPage]:
        """Pages of a PageBean endpoint (``startAt``/``maxResults``/``isLast``/``values``)."""
        start = 0
        for _ in range(100_000):  # a hard bound: a server that never says isLast cannot loop us forever
            page = self.request("GET", path, params={**(params or {}), "startAt": start, "maxResults": page_size})
            yield page
            data = page.json()
            values = data.get("values") or [] if isinstance(data, dict) else []
            if not isinstance(data, dict) or data.get("isLast", True) or not values:
                return
            start += len(values)
            total = data.get("total")
            if isinstance(total, int) and start >= total:
                return
        raise JiraError(f"{self.describe('GET', path)}: pagination did not end")

    def token_pages(self, path: str, body: dict[str, Any], *, list_key: str = "issues") -> Iterator[RawPage]:
        """Pages of a ``nextPageToken`` endpoint such as ``POST /rest/api/3/search/jql``."""
        for page, _data in self.token_pages_parsed(path, body, list_key=list_key):
            yield page

    def token_pages_parsed(
        self, path: str, body: dict[str, Any], *, list_key: str = "issues"
    ) -> Iterator[tuple[RawPage, Any]]:
        """:meth:`token_pages`, each page with its body as parsed when it was checked (the caller's
        own: parsing a page of 100 issues again would cost as much as the first time)."""
        token: str | None = None
        seen_tokens: set[str] = set()
        for _ in range(1_000_000):
            page, data = self.request_parsed(
                "POST", path, json_body={**body, **({"nextPageToken": token} if token else {})}
            )
            # Read before the caller sees (and may change) the parsed body.
            last = not isinstance(data, dict) or bool(data.get("isLast")) or not data.get(list_key)
            token = data.get("nextPageToken") if isinstance(data, dict) else None
            yield page, data
            if last or not token:
                return
            if token in seen_tokens:
                raise JiraError(f"{self.describe('POST', path)}: server repeated nextPageToken")
            seen_tokens.add(token)
        raise JiraError(f"{self.describe('POST', path)}: pagination did not end")
