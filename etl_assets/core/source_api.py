"""What a source declares to the house, and the tools its tenants-file section is read with.

A source package (``sources/jira``, ``sources/github``) exports one :class:`Source`: its name
(the tenants file's key, the Dagster resource's key, ``EntitySpec.source``), how to read its
section of a tenant's entry, and how to open a client for a tenant. The catalogue lists the
sources; the tenants registry and the one generic Dagster resource (``defs/resources.py``'s
``SourceResource``) work from these declarations and know no source by name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from etl_assets.core.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy import Engine

ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SAMPLE_SCHEME = "sample"
DocPath = tuple[str | int, ...]  # where a value sits in the file: ("tenants", 0, "jira", "url")
_USERINFO = re.compile(r"[^/@\s]+@")


class TenantConfigError(ConfigError):
    """The tenants file or one tenant in it is invalid; the message names the file, line and key."""


def kind_of(value: object) -> str:
    """How a message names a value of the wrong type: ``a mapping``, ``a list``, ``nothing``, ``int``."""
    return {dict: "a mapping", list: "a list", type(None): "nothing"}.get(type(value), type(value).__name__)


def without_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` masked: a secret pasted into a URL is never echoed."""
    return _USERINFO.sub("***@", url)


def is_sample_url(url: str) -> bool:
    return urlsplit(url).scheme == SAMPLE_SCHEME


@dataclass(frozen=True)
class Located:
    """Turns a path in the document into ``<file> line <n>`` (just ``<file>`` for a mapping in memory)."""

    source: str
    lines: Mapping[DocPath, int]

    def at(self, path: DocPath) -> str:
        while path and path not in self.lines:  # a missing key: the line of what holds it
            path = path[:-1]
        line = self.lines.get(path)
        return f"{self.source} line {line}" if line else self.source

    def error(self, path: DocPath, message: str) -> TenantConfigError:
        return TenantConfigError(f"{self.at(path)}: {message}")

    def check_keys(self, raw: Mapping[Any, Any], path: DocPath, allowed: tuple[str, ...], under: str) -> None:
        for key in raw:
            if key not in allowed:
                raise self.error(
                    (*path, key), f"unknown key {str(key)!r} under {under} (allowed: {', '.join(allowed)})"
                )


@dataclass(frozen=True)
class Section:
    """One source's section of one tenant's entry (``tenants[0].github``), as its parser sees it.

    Every error it raises names the file, the line, the tenant and the key (``github.org``).
    """

    name: str  # the source's key: "github"
    raw: Mapping[str, Any]
    tenant: str
    path: DocPath
    where: Located

    def error(self, key: str | None, message: str) -> TenantConfigError:
        """``message`` about ``key`` (None: the section itself), prefixed with where and which tenant."""
        path = self.path if key is None else (*self.path, key)
        return self.where.error(path, f"tenant {self.tenant!r}: {message}")

    def check_keys(self, allowed: tuple[str, ...]) -> None:
        self.where.check_keys(self.raw, self.path, allowed, self.name)

    def env_name(self, key: str) -> str | None:
        """The NAME of an environment variable under ``key`` (None when absent); a value that is not a
        variable name is refused without being echoed: it may be a secret pasted in by mistake."""
        value = self.raw.get(key)
        if value is not None and not (isinstance(value, str) and ENV_NAME_PATTERN.fullmatch(value)):
            raise self.error(
                key,
                f"{self.name}.{key} must be the NAME of an environment variable (letters, digits and '_'), "
                "not its value",
            )
        return value

    def url(self, key: str, allowed: str, default: str | None = None) -> str:
        """An http(s) URL or ``sample://NAME`` under ``key``, without a trailing slash; ``allowed`` says
        what the message offers instead."""
        value = self.raw.get(key, default)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise self.error(key, f"{self.name}.{key} is required ({allowed})")
        if not isinstance(value, str):
            raise self.error(key, f"{self.name}.{key} must be {allowed}, got {kind_of(value)}")
        text = value.strip()
        parts = urlsplit(text)
        if parts.scheme == SAMPLE_SCHEME and parts.netloc:
            return text
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self.error(key, f"{self.name}.{key} {without_userinfo(text)!r} is not allowed: use {allowed}")
        return text.rstrip("/")


class SectionConfig(Protocol):
    """What the house asks of a source's config (the value ``Source.parse`` returns)."""

    @property
    def url(self) -> str:
        """The site or API root; ``sample://NAME`` for a bundled sample."""
        ...

    @property
    def is_sample(self) -> bool: ...

    def secret_envs(self) -> tuple[str, ...]:
        """Names of the environment variables that hold this section's secrets."""
        ...


@dataclass(frozen=True)
class ClientOptions:
    """How the generic resource asks a source's client to behave (the resource's configuration)."""

    timeout_s: float
    connect_timeout_s: float
    max_attempts: int
    max_wait_s: float
    page_size: int
    # The project's database, for a source that declares ``uses_database`` (GitHub keeps its ETags there).
    engine: Engine | None = None


# (tenant id, the source's section of that tenant or None, options) -> a client for the block's life.
ClientOpener = Callable[[str, Any, ClientOptions], AbstractContextManager[Any]]


@dataclass(frozen=True)
class Source:
    """A source as the house knows it. Nothing outside the source's package reads its section."""

    name: str  # the tenants file's key, the Dagster resource's key and EntitySpec.source
    title: str  # how messages name it: "GitHub"
    parse: Callable[[Section], SectionConfig]  # the tenant's section -> its config (raises TenantConfigError)
    open_client: ClientOpener
    # Client defaults, where this source's API differs from the generic ones (GitHub: 100 per page,
    # rate-limit waits up to 15 minutes).
    max_wait_s: float = 60.0
    page_size: int = 50
    required: bool = False  # every tenant must have this section (Jira: a tenant is a Jira site)
    uses_database: bool = False  # its client keeps state in the project's database (ClientOptions.engine)
    # What the tenants file's message says a section of this source holds, e.g. "org and/or repos".
    holds: str = "its settings"
