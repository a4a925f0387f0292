"""HTTP details every client of ours shares: retry hints, safe URLs, one-line transport errors.

The Jira client, the embeddings provider and the vector store each talk to a different
server, but read ``Retry-After`` the same way and must name a server in an error message
the same way: the setting that chose it and its host, never a credential the URL carries.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from urllib.parse import urlsplit


def header(headers: Mapping[str, str], name: str) -> str | None:
    """``headers[name]``, case-insensitively also for a plain dict (httpx's Headers already are)."""
    value = headers.get(name)
    if value is None and not hasattr(headers, "raw"):
        lowered = {k.lower(): v for k, v in headers.items()}
        value = lowered.get(name.lower())
    return value


def seconds_or_count(value: str | None) -> float | None:
    """A header's non-negative, finite number; None when absent or not one.

    Negative values are "not said": Azure answers -1 for limits it does not enforce.
    """
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def parse_retry_after(headers: Mapping[str, str], *, now: Callable[[], float] = time.time) -> float | None:
    """The server's retry delay in seconds: ``retry-after-ms``, else ``retry-after`` (seconds or HTTP date).

    ``retry-after-ms`` is OpenAI's (and its gateways') finer hint; Jira and Qdrant send the
    standard header only, so reading both serves every client.
    """
    ms = seconds_or_count(header(headers, "retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    raw = header(headers, "retry-after")
    if raw is None:
        return None
    seconds = seconds_or_count(raw)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; one written with -0000 comes back naive
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now())


def display_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe for logs and messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def host_port(url: str) -> str:
    """``host:port`` of ``url`` (the scheme's default port when none is written)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return f"{host}:{port}" if port else host


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, cut to ``limit`` characters: server messages may span pages."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def transport_reason(exc: BaseException) -> str:
    """The innermost cause of a transport failure, as ``ConnectError: All connection attempts failed``.

    Client libraries wrap httpx's error in their own ("Connection error."), which says
    nothing about why; the bottom of the chain does.
    """
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    # Prefer the deepest httpx error: httpcore's twin below it has the same message.
    chosen = next((e for e in reversed(seen) if type(e).__module__.startswith("httpx")), seen[-1])
    message = one_line(str(chosen), 200)
    return f"{type(chosen).__name__}: {message}" if message else type(chosen).__name__
