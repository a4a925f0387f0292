"""The tenant registry: which Jira sites we sync, read from a YAML file.

Tenant ids become Qdrant collection names and Dagster partition keys, so they are
validated strictly. The file names environment variables for credentials, never the
secrets themselves.

The schema is strict: a key the registry does not know is refused (a misspelt
``projets:`` would otherwise sync every project), and every error names the file and the
line it is on. Each source reads its own section of a tenant (``jira:``, ``github:``): the
catalogue lists the sources, and a source's package declares the keys it accepts and how it
reads them (``sources/<name>/source.py``). This module knows no source's keys.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from etl_assets.core.settings import BUNDLED_TENANTS_FILE as BUNDLED_TENANTS_FILE
from etl_assets.core.settings import Settings
from etl_assets.core.source_api import DocPath, Located, Section, SectionConfig, TenantConfigError, kind_of

if TYPE_CHECKING:
    from etl_assets.core.source_api import Source

__all__ = ["BUNDLED_TENANTS_FILE", "Tenant", "TenantConfigError", "TenantRegistry"]

TENANT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,48}$")
TOP_KEYS = ("tenants",)


class UnknownTenantError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its argument; we want a sentence
        return str(self.args[0])


@dataclass(frozen=True)
class Tenant:
    """One tenant and the sources it uses: source name -> that source's config, as the source's own
    package read it from the tenant's section (``sources/<name>/source.py``). Every tenant has the
    sources the catalogue marks required (Jira)."""

    id: str
    name: str
    sections: Mapping[str, SectionConfig] = field(default_factory=dict)

    def section(self, source: str) -> Any | None:
        """The tenant's config of ``source`` (``"github"``), or None when the tenant does not use it."""
        return self.sections.get(source)


def validate_tenant_id(value: object, *, where: str = "tenant id") -> str:
    """``value`` as a tenant id, or TenantConfigError: ids become collection names and partition keys."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise TenantConfigError(f"{where}: must be a string of letters, digits, '_' or '-', got {kind_of(value)}")
    text = str(value)
    if not TENANT_ID_PATTERN.fullmatch(text):
        raise TenantConfigError(
            f"{where}: {text!r} is not a valid tenant id (1-48 letters, digits, '_' or '-'; "
            "it becomes part of Qdrant collection names)"
        )
    return text


def _dotted(path: DocPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _sources() -> tuple[Source, ...]:
    # The catalogue imports every source's specs, some of which import this module: read it late.
    from etl_assets.core.catalogue import SOURCES

    return SOURCES


def _parse_tenant(raw: object, index: int, where: Located, sources: tuple[Source, ...]) -> Tenant:
    path: DocPath = ("tenants", index)
    if not isinstance(raw, dict):
        *first, last = ("id", "name", *(s.name for s in sources if s.required))
        needed = f"{', '.join(first)} and {last}"
        raise where.error(path, f"tenants[{index}] must be a mapping with {needed}, got {kind_of(raw)}")
    where.check_keys(raw, path, ("id", "name", *(s.name for s in sources)), f"tenants[{index}]")
    tenant_id = validate_tenant_id(raw.get("id"), where=f"{where.at((*path, 'id'))}: tenants[{index}].id")
    name = raw.get("name")
    if name is not None and not isinstance(name, str | int | float):
        raise where.error((*path, "name"), f"tenant {tenant_id!r}: name must be text, got {kind_of(name)}")
    configs: dict[str, SectionConfig] = {}
    for source in sources:
        if source.name not in raw and not source.required:
            continue
        section = raw.get(source.name)
        if not isinstance(section, dict):
            need = (
                f"a {source.name!r} mapping with {source.holds} is required"
                if source.required
                else f"{source.name!r} must be a mapping with {source.holds}"
            )
            raise where.error((*path, source.name), f"tenant {tenant_id!r}: {need}, got {kind_of(section)}")
        configs[source.name] = source.parse(Section(source.name, section, tenant_id, (*path, source.name), where))
    return Tenant(id=tenant_id, name=str(name) if name is not None else tenant_id, sections=configs)


def _lines(loader: yaml.SafeLoader, node: yaml.Node, source: str, path: DocPath = ()) -> dict[DocPath, int]:
    """Path -> 1-based line of every key and list item under ``node``; refuses a key given twice."""
    out: dict[DocPath, int] = {}
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolve `<<: *anchor` merges, as loading does
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                # YAML keeps the last one silently: the first would be ignored without a word.
                raise TenantConfigError(
                    f"{source} line {line}: key {key_node.value!r} appears twice under "
                    f"{_dotted(path) or 'the top level'} (first on line {seen[key_node.value]})"
                )
            seen[key_node.value] = line
            out[(*path, key_node.value)] = line
            out.update(_lines(loader, value_node, source, (*path, key_node.value)))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out[(*path, index)] = item.start_mark.line + 1
            out.update(_lines(loader, item, source, (*path, index)))
    return out


def _read_yaml(text: str, source: str) -> tuple[object, dict[DocPath, int]]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines = {(): node.start_mark.line + 1, **_lines(loader, node, source)}
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" line {mark.line + 1}" if mark else ""
        # Only the parser's sentence, not its excerpt of the file (which could hold anything).
        problem = " ".join(str(exc.problem or exc.context or "cannot be parsed").split())
        raise TenantConfigError(f"{source}{line}: not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise TenantConfigError(f"{source}: not valid YAML: {type(exc).__name__}") from None
    finally:
        loader.dispose()


@dataclass(frozen=True)
class TenantRegistry:
    tenants: tuple[Tenant, ...]
    source: str = "<memory>"

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.tenants]

    def get(self, tenant_id: str) -> Tenant:
        for tenant in self.tenants:
            if tenant.id == tenant_id:
                return tenant
        raise UnknownTenantError(
            f"unknown tenant {tenant_id!r}: {self.source} defines {', '.join(self.ids) or 'no tenants'}"
        )

    @classmethod
    def from_mapping(
        cls,
        data: object,
        source: str = "<memory>",
        lines: Mapping[DocPath, int] | None = None,
        sources: tuple[Source, ...] | None = None,
    ) -> TenantRegistry:
        """The registry ``data`` describes; ``lines`` (path -> line) places errors in the file it came from.
        ``sources``: the sources whose sections a tenant may have (default: the catalogue's)."""
        where = Located(source, lines or {})
        if not isinstance(data, dict):
            raise where.error((), f"expected a mapping with a top-level 'tenants:' list, got {kind_of(data)}")
        if not isinstance(data.get("tenants"), list):
            got = kind_of(data["tenants"]) if "tenants" in data else "no 'tenants' key"
            raise where.error(("tenants",), f"expected a top-level 'tenants:' list of tenants, got {got}")
        where.check_keys(data, (), TOP_KEYS, "the top level")
        declared = _sources() if sources is None else sources
        tenants = tuple(_parse_tenant(raw, i, where, declared) for i, raw in enumerate(data["tenants"]))
        seen: dict[str, str] = {}  # lower-cased id -> id
        for index, tenant in enumerate(tenants):
            other = seen.get(tenant.id.lower())
            at = ("tenants", index, "id")
            if other == tenant.id:
                raise where.error(at, f"tenant id {tenant.id!r} appears twice")
            if other is not None:
                # Qdrant's local mode keeps a folder per collection: on a case-insensitive file
                # system the two tenants would share their collections.
                raise where.error(
                    at,
                    f"tenant ids {other!r} and {tenant.id!r} differ only by case; "
                    "collection names must not depend on case",
                )
            seen[tenant.id.lower()] = tenant.id
        if not tenants:
            raise where.error(("tenants",), "the 'tenants:' list is empty: add at least one tenant")
        return cls(tenants=tenants, source=source)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> TenantRegistry:
        """Read the registry from ``path``, else the settings' ``ETL_TENANTS_FILE`` (default: the bundled demo)."""
        chosen = Path(path) if path else Settings.load().tenants_file
        try:
            text = chosen.read_text(encoding="utf-8")
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise TenantConfigError(f"tenants file {chosen}: cannot be read ({reason}); set ETL_TENANTS_FILE") from None
        except UnicodeDecodeError:
            raise TenantConfigError(f"tenants file {chosen}: not UTF-8 text") from None
        data, lines = _read_yaml(text, str(chosen))
        return cls.from_mapping(data, source=str(chosen), lines=lines)
