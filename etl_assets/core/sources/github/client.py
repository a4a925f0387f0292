"""A GitHub REST v3 client on httpx: conditional requests, Link paging, rate limits, retries.

- **Conditional requests.** Every GET carries ``If-None-Match`` with the ETag stored for that
  exact URL (:class:`EtagCache`, a table in the shared database). A ``304 Not Modified`` does not
  count against the rate limit; its body is replayed from the cache, so a sync where nothing
  changed lands the same pages at almost no cost.
- **Paging** follows the ``Link: <…>; rel="next"`` header (kept with the cached body, so a 304
  page still knows its successor).
- **Primary rate limit.** When ``x-ratelimit-remaining`` reaches 0 the client waits until
  ``x-ratelimit-reset`` before its next request; a 403/429 saying so is retried after the reset.
- **Secondary rate limit.** A 403/429 with ``retry-after`` waits that long; without it, GitHub's
  documented backoff: at least a minute, doubling. A wait longer than ``max_wait_s`` fails the
  step with a message saying when to come back, rather than asking early (never hammer).
- 408 and 5xx and transport errors are retried with jittered backoff; 401/403 otherwise fail at
  once; 404 raises :class:`GitHubNotFound` (a repository gone or no longer visible to the token).

Errors name the tenant, the API root and the request — never the token.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, delete, insert, select, update
from tenacity import RetryCallState, Retrying, nap, retry_if_exception, stop_after_attempt

from etl_assets.core.http import one_line, parse_retry_after, seconds_or_count, transport_reason
from etl_assets.core.records import RawPage
from etl_assets.core.sources.github.tables import http_cache

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 500, 502, 503, 504})
SECONDARY_BACKOFF_S = 60.0  # GitHub: without retry-after, wait at least one minute, then longer
API_VERSION = "2022-11-28"


class GitHubError(RuntimeError):
    """A GitHub request failed for good. The message names tenant, API root and request."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class GitHubAuthError(GitHubError):
    pass


class GitHubNotFound(GitHubError):
    pass


class GitHubRateLimited(GitHubError):
    pass


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None, *, secondary: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.secondary = secondary


@dataclass
class GitHubStats:
    requests: int = 0
    retries: int = 0
    throttled: int = 0  # 403/429 rate-limit answers
    not_modified: int = 0  # 304s: served from the ETag cache, free of rate limit
    waited_s: float = 0.0

    def metadata(self) -> dict[str, Any]:
        return {f"github_{k}": round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Cached:
    etag: str
    body: str
    next_url: str | None


@dataclass
class EtagCache:
    """The last ETag, body and next-page link per (tenant, URL), in the shared database."""

    engine: Engine
    tenant_id: str

    @staticmethod
    def _key(url: str) -> str:
        return hashlib.sha256(url.encode("utf-8")).hexdigest()

    def get(self, url: str) -> Cached | None:
        c = http_cache.c
        with self.engine.connect() as conn:
            row = conn.execute(
                select(c.etag, c.body, c.next_url).where(c.tenant_id == self.tenant_id, c.url_hash == self._key(url))
            ).first()
        return Cached(row.etag, row.body, row.next_url) if row else None

    def touch(self, url: str) -> None:
        """Mark an entry as used (a 304 served from it), so that pruning keeps it."""
        c = http_cache.c
        with self.engine.begin() as conn:
            conn.execute(
                update(http_cache)
                .where(c.tenant_id == self.tenant_id, c.url_hash == self._key(url))
                .values(stored_at=datetime.now(UTC))
            )

    def prune(self, unused_for: timedelta = timedelta(days=7)) -> int:
        """Forget entries not used for ``unused_for``: incremental URLs carry a ``since`` that moves on,
        so without this the cache would grow by a few rows every sync."""
        c = http_cache.c
        with self.engine.begin() as conn:
            return conn.execute(
                delete(http_cache).where(c.tenant_id == self.tenant_id, c.stored_at < datetime.now(UTC) - unused_for)
            ).rowcount

    def put(self, url: str, entry: Cached) -> None:
        c = http_cache.c
        values = {"etag": entry.etag, "body": entry.body, "next_url": entry.next_url, "stored_at": datetime.now(UTC)}
        where = (c.tenant_id == self.tenant_id, c.url_hash == self._key(url))
        with self.engine.begin() as conn:
            if conn.execute(update(http_cache).where(*where).values(**values)).rowcount == 0:
                conn.execute(
                    insert(http_cache).values(tenant_id=self.tenant_id, url_hash=self._key(url), url=url, **values)
                )


def _header_number(response: httpx.Response, name: str) -> float | None:
    return seconds_or_count(response.headers.get(name))


@dataclass
class GitHubClient:
    """Synchronous client for one tenant's GitHub. Owns nothing; the caller closes ``http``."""

    http: httpx.Client
    tenant_id: str
    api: str  # the API root as configured, for messages (no credentials in it)
    cache: EtagCache | None = None
    secret: str | None = field(default=None, repr=False)  # only to strip it from error bodies that echo it
    max_attempts: int = 6
    max_wait_s: float = 60.0
    backoff_base_s: float = 0.5
    stats: GitHubStats = field(default_factory=GitHubStats)
    sleep: Callable[[float], None] | None = None  # injected by tests; tenacity's sleep by default
    clock: Callable[[], float] = time.time
    _resume_at: float | None = None  # primary limit spent: no request before this epoch second

    def describe(self, url: str) -> str:
        return f"tenant {self.tenant_id!r} GitHub {self.api}: GET {url}"

    def _redact(self, text: str) -> str:
        if self.secret and len(self.secret) >= 4:
            text = text.replace(self.secret, "***")
        return text

    def _error_text(self, response: httpx.Response) -> str:
        try:
            data = response.json()
            text = str(data.get("message") or response.text) if isinstance(data, dict) else response.text
        except ValueError:
            text = response.text
        return self._redact(one_line(text, 300))

    def _pause(self, seconds: float) -> None:
        self.stats.waited_s += seconds
        (self.sleep or nap.sleep)(seconds)

    def _honour_primary_limit(self, what: str) -> None:
        if self._resume_at is None:
            return
        wait = self._resume_at - self.clock()
        self._resume_at = None
        if wait <= 0:
            return
        if wait > self.max_wait_s:
            raise GitHubRateLimited(self._too_long(what, wait, "primary rate limit spent"))
        self._pause(wait)

    def _too_long(self, what: str, wait: float, why: str) -> str:
        when = datetime.fromtimestamp(self.clock() + wait, UTC).isoformat(timespec="seconds")
        return (
            f"{what}: {why}; GitHub asks us to wait {wait:.0f}s (until {when}), longer than max_wait_s="
            f"{self.max_wait_s:g}: run again after that"
        )

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            wait = exc.retry_after
        elif isinstance(exc, _Retryable) and exc.secondary:
            wait = SECONDARY_BACKOFF_S * 2 ** (state.attempt_number - 1)
        else:
            wait = random.uniform(0, self.backoff_base_s * 2 ** (state.attempt_number - 1))
            wait = min(wait, self.max_wait_s)
        if wait > self.max_wait_s:
            raise GitHubRateLimited(self._too_long(str(exc), wait, "rate limited"))
        self.stats.retries += 1
        self.stats.waited_s += wait
        return wait

    def get(self, url: str, params: dict[str, Any] | None = None) -> tuple[RawPage, str | None]:
        """One GET (conditional when the cache holds the URL): the page and the next page's URL."""
        request_url = str(self.http.build_request("GET", url, params=params).url)
        what = self.describe(httpx.URL(request_url).raw_path.decode("ascii", "replace"))
        cached = self.cache.get(request_url) if self.cache else None

        def attempt() -> tuple[RawPage, str | None]:
            self._honour_primary_limit(what)
            self.stats.requests += 1
            headers = {"If-None-Match": cached.etag} if cached else {}
            try:
                response = self.http.get(request_url, headers=headers)
            except httpx.TimeoutException as exc:
                raise _Retryable(f"{what}: timed out ({type(exc).__name__})", None) from None
            except httpx.TransportError as exc:
                raise _Retryable(f"{what}: connection failed ({transport_reason(exc)})", None) from None
            status = response.status_code
            remaining = _header_number(response, "x-ratelimit-remaining")
            reset = _header_number(response, "x-ratelimit-reset")
            if remaining == 0 and reset is not None:
                self._resume_at = reset + 1  # the reset second itself may still be refused
            if status == 304 and cached is not None:
                self.stats.not_modified += 1
                if self.cache:
                    self.cache.touch(request_url)
                return self._page(request_url, 304, cached.body), cached.next_url
            if status in (403, 429):
                message = self._error_text(response)
                retry_after = parse_retry_after(response.headers)
                if remaining == 0 and reset is not None and retry_after is None:
                    self.stats.throttled += 1
                    self._resume_at = None
                    raise _Retryable(f"{what}: HTTP {status} ({message})", max(0.0, reset + 1 - self.clock()))
                if retry_after is not None or status == 429 or "rate limit" in message.lower():
                    self.stats.throttled += 1
                    raise _Retryable(f"{what}: HTTP {status} ({message})", retry_after, secondary=True)
                raise GitHubAuthError(f"{what}: HTTP {status} — the token lacks permission ({message})", status=status)
            if status == 401:
                raise GitHubAuthError(
                    f"{what}: HTTP 401 — the token was refused ({self._error_text(response)})", status=status
                )
            if status == 404:
                raise GitHubNotFound(f"{what}: HTTP 404 — not found or not visible to the token", status=404)
            if status in RETRY_STATUSES:
                raise _Retryable(
                    f"{what}: HTTP {status} ({self._error_text(response)})", parse_retry_after(response.headers)
                )
            if status >= 300:
                raise GitHubError(f"{what}: HTTP {status} — {self._error_text(response)}", status=status)
            body = response.text
            try:
                json.loads(body)
            except ValueError:
                raise _Retryable(f"{what}: response is not valid JSON ({len(body)} bytes)", None) from None
            except RecursionError:
                raise GitHubError(
                    f"{what}: response nests too deeply for the JSON decoder ({len(body)} bytes)"
                ) from None
            link = response.links.get("next", {}).get("url")
            etag = response.headers.get("etag")
            if self.cache and etag:
                self.cache.put(request_url, Cached(etag, body, link))
            return self._page(request_url, status, body), link

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
            raise GitHubError(f"{exc} — gave up after {self.max_attempts} attempts") from None

    @staticmethod
    def _page(url: str, status: int, body: str) -> RawPage:
        parsed = httpx.URL(url)
        return RawPage("GET", parsed.path, dict(parsed.params.multi_items()), status, body, datetime.now(UTC))

    def pages(self, path: str, params: dict[str, Any] | None = None) -> Iterator[RawPage]:
        """Every page of a listing, following ``Link: rel="next"``."""
        url: str | None = path
        query = params
        seen: set[str] = set()
        while url is not None:
            page, next_url = self.get(url, query)
            yield page
            if next_url is not None and next_url in seen:
                raise GitHubError(f"{self.describe(path)}: the server repeated a next-page link")
            if next_url is not None:
                seen.add(next_url)
            url, query = next_url, None
