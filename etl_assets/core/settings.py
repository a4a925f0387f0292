"""One typed settings object for the whole environment, read once.

:class:`Settings` declares every environment variable the project reads (README,
"Configuration"): its type, default and meaning. :meth:`Settings.load` reads them once per
process (or from a mapping a test or a caller passes) and refuses a wrong value with one
line naming the variable, what is wrong and what is allowed (a :class:`SettingsError`, a
:class:`~etl_assets.core.errors.ConfigError`).

Defaults do not depend on where the package is installed: the embedded database and the
local Qdrant folder live under ``ETL_DATA_DIR``, default ``./.data`` in the current
directory when the settings are loaded.

The embedding provider's settings are :class:`EmbeddingSettings`, declared once here. The
environment is read into it through ``_EmbeddingEnvironment`` (the same fields, named by
:func:`embedding_env_name`), and the Dagster resource ``EmbeddingsResource`` inherits it, so
its fields, types, defaults, descriptions and checks are these and no copy is kept by hand.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasGenerator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from etl_assets.core.errors import ConfigError
from etl_assets.core.store.retention import RawRetention

# Package data: installed next to the code, in a checkout and in site-packages alike.
BUNDLED_TENANTS_FILE = Path(__file__).resolve().parent.parent / "tenants.yaml"
DEFAULT_OPENAI_MODEL = "text-embedding-3-small"
DEFAULT_OPENAI_DIMENSIONS = 1536


class SettingsError(ConfigError):
    """An environment variable (or the setting it feeds) is wrong; the message names it."""


class EmbeddingConfigError(SettingsError):
    """A setting of the embedding provider is wrong; the message names the setting."""


# -- the one integer rule ------------------------------------------------------------------------

_WHOLE_NUMBER = re.compile(r"^[+-]?\d+$")


def positive_int(value: object) -> int:
    """Parse a count: a whole number of 1 or more.

    0 and negatives are refused rather than read as "the default" (a 0 that silently meant
    "default" once hid a misconfiguration); an unset or empty variable never gets here.
    """
    if isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("use a whole number of 1 or more, or leave it empty for the default")
    return value


PositiveInt = Annotated[int, BeforeValidator(positive_int)]


def _http_url(value: str | None, allowed: str) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(allowed)
    return value


# -- one line per error ---------------------------------------------------------------------------


_USERINFO = re.compile(r"[^/@\s]+@")
# Variables whose values are secrets: bound to resources as EnvVar by name, never shown.
SECRET_VARIABLES = frozenset({"OPENAI_API_KEY", "EMBEDDING_FALLBACK_API_KEY", "QDRANT_API_KEY", "DATABASE_URL"})


def _shown(value: object) -> str:
    # A URL's user:password@ is masked; repr() escapes newlines, so a value can never break
    # the message onto a second line.
    return repr(_USERINFO.sub("***@", str(value)))


def describe_validation_error(exc: ValidationError, name_of: Callable[[str], str]) -> str:
    """One line per refused setting, joined: ``NAME='value' is not allowed: what is allowed``.

    ``name_of`` turns a field name (or an alias, which is already the variable's name) into
    the variable an operator sets. Errors our own validators raise as a ConfigError carry a
    finished sentence and are used as they are. A secret's value is never shown.
    """
    lines = []
    for error in exc.errors(include_url=False):
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigError):
            lines.append(str(cause))
            continue
        name = name_of(str(error["loc"][0])) if error["loc"] else "setting"
        if isinstance(cause, ValueError):
            allowed = str(cause)
        elif error["type"] == "literal_error":
            allowed = "use " + str(error["ctx"]["expected"]).replace("'", "")
        else:
            allowed = str(error["msg"]).replace("Input should be", "it should be")
        shown = "<hidden>" if name in SECRET_VARIABLES else _shown(error["input"])
        lines.append(f"{name}={shown} is not allowed: {allowed}")
    return "; ".join(lines)


# -- sources: pydantic-settings' environment reader, over a mapping we choose -----------------------


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source, reading ``environ`` instead of ``os.environ``.

    Tests and ``build_definitions(env=...)`` pass a mapping; that mapping alone must be read,
    never mixed with the process environment.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # An empty variable is unset (env_ignore_empty): `FOO= cmd` must not mean FOO=0.
        return {k: v for k, v in self._environ.items() if v != ""}


class _FromLoadOnly(BaseSettings):
    """Base of the classes :meth:`Settings.load` reads: values come from its arguments only."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", populate_by_name=True, frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load() runs the environment source itself (over os.environ or a given mapping) and
        # passes what it read in; nothing is read behind its back.
        return (init_settings,)


# -- embeddings -----------------------------------------------------------------------------------


def embedding_env_name(field: str) -> str:
    """The environment variable of an :class:`EmbeddingSettings` field."""
    # The key and the gateway keep the names the OpenAI SDK itself reads.
    special = {"api_key": "OPENAI_API_KEY", "base_url": "OPENAI_BASE_URL", "pool_embeddings": "ETL_POOL_EMBEDDINGS"}
    return special.get(field, f"EMBEDDING_{field.upper()}")


def _embedding_name(name: str) -> str:
    return name if name.isupper() else embedding_env_name(name)


class EmbeddingSettings(BaseModel):
    """Text embeddings: any OpenAI-compatible endpoint, or the packaged local MiniLM model.

    Declared once. Why inheritance rather than a second set of fields: the Dagster resource
    ``EmbeddingsResource`` subclasses this model (a ConfigurableResource is a pydantic model
    too), so the UI, run config and the code here share one list of fields, defaults,
    descriptions and checks; ``EmbeddingsResource.settings()`` turns a resource back into
    this plain model field by field. The environment is read into the same fields by
    ``_EmbeddingEnvironment``; each variable's name comes from :func:`embedding_env_name`.

    A wrong value raises :class:`EmbeddingConfigError` naming the environment variable, also
    when the model is built in code.
    """

    # Only ``frozen`` is set: the resource subclass merges this config into Dagster's.
    model_config = ConfigDict(frozen=True)

    provider: Literal["openai", "local"] = Field(
        default="local",
        description="EMBEDDING_PROVIDER: 'openai' (any OpenAI-compatible endpoint) or 'local' (MiniLM on CPU). "
        "From the environment: 'openai' if OPENAI_API_KEY is set, else 'local'.",
    )
    model: str | None = Field(
        default=None, description="EMBEDDING_MODEL; default text-embedding-3-small (openai), MiniLM (local)."
    )
    dimensions: PositiveInt | None = Field(
        default=None, description="EMBEDDING_DIMENSIONS: vector size; default 1536 (openai), 384 (local)."
    )
    api_key: str | None = Field(
        default=None, repr=False, description="OPENAI_API_KEY (a secret: bind with EnvVar, never in run config)."
    )
    base_url: str | None = Field(default=None, description="OPENAI_BASE_URL of an OpenAI-compatible gateway.")
    timeout_s: float = Field(default=60.0, gt=0, description="EMBEDDING_TIMEOUT_S: per-request timeout, seconds.")
    max_retries: int = Field(
        default=6,
        ge=0,
        description="EMBEDDING_MAX_RETRIES: retries per request on 408/500/502/503/504, timeouts and resets.",
    )
    concurrency: PositiveInt = Field(default=4, description="EMBEDDING_CONCURRENCY: requests in flight per step.")
    batch_inputs: PositiveInt | None = Field(
        default=None, description="EMBEDDING_BATCH_INPUTS: most inputs per request (provider maximum if unset)."
    )
    batch_tokens: PositiveInt | None = Field(
        default=None, description="EMBEDDING_BATCH_TOKENS: most tokens per request (provider maximum if unset)."
    )
    chunk_tokens: PositiveInt | None = Field(
        default=None, description="EMBEDDING_CHUNK_TOKENS: longest chunk, tokens (the model's input limit if unset)."
    )
    # A client-side budget for the whole provider key (for gateways that send no rate-limit
    # headers, or to stay below the real limit), divided by pool_limit: that many vector steps
    # may run at once (the Dagster pool "embeddings"), each gets its share.
    rpm: PositiveInt | None = Field(
        default=None, description="EMBEDDING_RPM: client-side requests/minute budget of the key."
    )
    tpm: PositiveInt | None = Field(
        default=None, description="EMBEDDING_TPM: client-side tokens/minute budget of the key."
    )
    pool_limit: PositiveInt = Field(
        default=1,
        description="EMBEDDING_POOL_LIMIT: vector steps at once, each gets 1/n of the budget "
        "(default ETL_POOL_EMBEDDINGS, the slots of the Dagster pool 'embeddings').",
    )
    # Gateways: extra headers whose values are secrets (read from the named variables when the
    # client opens, never stored here), plain query parameters such as Azure's api-version.
    headers: str | None = Field(
        default=None,
        description="EMBEDDING_HEADERS: extra request headers as 'Name=ENV_VAR' pairs separated by commas; "
        "each value is read from ENV_VAR when the step opens its client (a secret: never shown).",
    )
    query_params: str | None = Field(
        default=None,
        description="EMBEDDING_QUERY_PARAMS: extra query parameters as 'name=value' pairs separated by '&' "
        "or commas, e.g. 'api-version=2024-02-01' (not secrets: they appear in URLs).",
    )
    # A second endpoint serving the same model, used while the primary fails (5xx, timeouts,
    # connection failures); probed at step start and refused if it serves another model.
    fallback_base_url: str | None = Field(
        default=None,
        description="EMBEDDING_FALLBACK_BASE_URL: an OpenAI-compatible endpoint serving the same model, "
        "used while OPENAI_BASE_URL fails.",
    )
    fallback_api_key: str | None = Field(
        default=None,
        repr=False,
        description="EMBEDDING_FALLBACK_API_KEY: the fallback's key (a secret; default OPENAI_API_KEY).",
    )

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise EmbeddingConfigError(describe_validation_error(exc, _embedding_name)) from None

    @field_validator("base_url", "fallback_base_url")
    @classmethod
    def _base_url_is_http(cls, value: str | None) -> str | None:
        return _http_url(value, "use an http(s) URL such as https://gateway.example/v1")

    @field_validator("headers")
    @classmethod
    def _headers_are_pairs(cls, value: str | None) -> str | None:
        if value is not None:
            parse_header_pairs(value)
        return value

    @field_validator("query_params")
    @classmethod
    def _query_params_are_pairs(cls, value: str | None) -> str | None:
        if value is not None:
            parse_query_params(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EmbeddingSettings:
        if self.provider == "openai" and not self.api_key:
            raise EmbeddingConfigError(
                "EMBEDDING_PROVIDER=openai but OPENAI_API_KEY is not set: set it, or use EMBEDDING_PROVIDER=local"
            )
        if self.tpm is not None and self.tpm // self.pool_limit < 1:
            raise EmbeddingConfigError(
                f"EMBEDDING_TPM={self.tpm} is not allowed with EMBEDDING_POOL_LIMIT={self.pool_limit}: "
                f"each pool slot needs a share of at least 1 token/minute (use {self.pool_limit} or more)"
            )
        return self

    def header_values(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The extra headers with their values, read from the variables ``headers`` names.

        Called where the client opens; a missing variable is a one-line error naming it (never a value).
        """
        source = os.environ if environ is None else environ
        out = {}
        for name, variable in parse_header_pairs(self.headers or ""):
            value = source.get(variable)
            if not value:
                raise EmbeddingConfigError(
                    f"EMBEDDING_HEADERS names {variable} for header {name}, but {variable} is not set"
                )
            out[name] = value
        return out

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_query_params(self.query_params or ""))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EmbeddingSettings:
        """The embedding section of :meth:`Settings.load` (kept for callers that want only it)."""
        return Settings.load(env).embedding

    @property
    def step_rpm(self) -> int | None:
        """This step's share of the requests-per-minute budget."""
        return None if self.rpm is None else max(1, self.rpm // self.pool_limit)

    @property
    def step_tpm(self) -> int | None:
        """This step's share of the tokens-per-minute budget."""
        return None if self.tpm is None else max(1, self.tpm // self.pool_limit)

    @property
    def model_name(self) -> str:
        from etl_assets.core.embeddings.local_provider import LOCAL_MODEL_NAME

        return self.model or (DEFAULT_OPENAI_MODEL if self.provider == "openai" else LOCAL_MODEL_NAME)


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Headers the client sets itself: a gateway setting must not replace them.
_RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "authorization"})


def parse_header_pairs(text: str) -> list[tuple[str, str]]:
    """``'X-Key=GW_KEY, X-Team=TEAM'`` as ``[('X-Key', 'GW_KEY'), ...]`` (header name, variable name)."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, variable = (x.strip() for x in item.partition("="))
        if not sep or not _HEADER_NAME.match(name) or not _VARIABLE_NAME.match(variable):
            raise EmbeddingConfigError(
                f"EMBEDDING_HEADERS={item!r} is not allowed: use Name=ENV_VAR pairs separated by commas "
                "(the header's value is read from the variable ENV_VAR)"
            )
        if name.lower() in _RESERVED_HEADERS:
            raise EmbeddingConfigError(
                f"EMBEDDING_HEADERS may not set {name}: the client sets it (the key goes in OPENAI_API_KEY)"
            )
        pairs.append((name, variable))
    return pairs


def parse_query_params(text: str) -> list[tuple[str, str]]:
    """``'api-version=2024-02-01&x=y'`` (or comma-separated) as name/value pairs."""
    pairs = []
    for item in filter(None, (part.strip() for part in re.split(r"[&,]", text))):
        name, sep, value = (x.strip() for x in item.partition("="))
        if not sep or not name or not value:
            raise EmbeddingConfigError(
                f"EMBEDDING_QUERY_PARAMS={item!r} is not allowed: use name=value pairs separated by '&' or commas"
            )
        pairs.append((name, value))
    return pairs


class _EmbeddingEnvironment(EmbeddingSettings, _FromLoadOnly):
    """:class:`EmbeddingSettings` as read from the environment: the same fields, by variable name."""

    model_config = SettingsConfigDict(alias_generator=AliasGenerator(validation_alias=embedding_env_name))

    pool_embeddings: PositiveInt | None = Field(
        default=None, description="ETL_POOL_EMBEDDINGS: the slots of the Dagster pool 'embeddings' (deployments)."
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_other_variables(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if "EMBEDDING_PROVIDER" not in data:
                data["EMBEDDING_PROVIDER"] = "openai" if data.get("OPENAI_API_KEY") else "local"
            if "EMBEDDING_POOL_LIMIT" not in data and "ETL_POOL_EMBEDDINGS" in data:
                # deploy/init-instance.sh sizes the pool from ETL_POOL_EMBEDDINGS: that many
                # steps share the budget unless EMBEDDING_POOL_LIMIT says otherwise.
                data["EMBEDDING_POOL_LIMIT"] = positive_int_or_error("ETL_POOL_EMBEDDINGS", data["ETL_POOL_EMBEDDINGS"])
        return data

    def plain(self) -> EmbeddingSettings:
        return EmbeddingSettings(**{name: getattr(self, name) for name in EmbeddingSettings.model_fields})


def positive_int_or_error(name: str, value: object) -> int:
    """:func:`positive_int`, raising a :class:`SettingsError` that names ``name``."""
    try:
        return positive_int(value)
    except ValueError as exc:
        raise SettingsError(f"{name}={_shown(value)} is not allowed: {exc}") from None


# -- Qdrant ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QdrantSettings:
    """Where the vectors live: a server (``url``, ``api_key``) or a local-mode folder (``path``)."""

    url: str | None
    api_key: str | None
    path: str
    engine: str = "edge"  # the embedded engine for ``path``: "edge" (Qdrant Edge) or "local" (qdrant-client)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> QdrantSettings:
        """The Qdrant section of :meth:`Settings.load`."""
        return Settings.load(env).qdrant


# -- the whole environment ------------------------------------------------------------------------

_CRON = re.compile(r"^(@(hourly|daily|midnight|weekly|monthly|yearly|annually)|\S+(\s+\S+){4})$")


class Settings(_FromLoadOnly):
    """Every environment variable the project reads, typed, with its default and meaning."""

    tenants_file: Path = Field(
        default=BUNDLED_TENANTS_FILE,
        validation_alias="ETL_TENANTS_FILE",
        description="ETL_TENANTS_FILE: the tenant registry; default the bundled demo file etl_assets/tenants.yaml.",
    )
    data_dir: Path = Field(
        default_factory=lambda: Path.cwd() / ".data",
        validation_alias="ETL_DATA_DIR",
        description="ETL_DATA_DIR: where the embedded defaults live; default ./.data in the current directory.",
    )
    database_url: str | None = Field(
        default=None,
        repr=False,  # may hold a password
        validation_alias="DATABASE_URL",
        description="DATABASE_URL: SQLAlchemy URL (SQLite or postgresql+psycopg2://...); "
        "default sqlite:///<ETL_DATA_DIR>/etl.db. A secret when it holds a password.",
    )
    qdrant_url: str | None = Field(
        default=None,
        validation_alias="QDRANT_URL",
        description="QDRANT_URL: a Qdrant server or cluster; unset for local mode in QDRANT_PATH.",
    )
    qdrant_api_key: str | None = Field(
        default=None, repr=False, validation_alias="QDRANT_API_KEY", description="QDRANT_API_KEY (a secret)."
    )
    qdrant_path: Path | None = Field(
        default=None,
        validation_alias="QDRANT_PATH",
        description="QDRANT_PATH: local-mode folder when no URL is set; default <ETL_DATA_DIR>/qdrant.",
    )
    qdrant_engine: Literal["local", "edge"] = Field(
        default="edge",
        validation_alias="QDRANT_ENGINE",
        description="QDRANT_ENGINE: the embedded engine for QDRANT_PATH: edge (the default; Qdrant Edge: HNSW and "
        "payload indexes; a local-mode folder is migrated on first use) or local (qdrant-client's local mode).",
    )
    executor: Literal["in_process", "multiprocess"] | None = Field(
        default=None,
        validation_alias="ETL_EXECUTOR",
        description="ETL_EXECUTOR: Dagster executor for every run (in_process or multiprocess); default in_process, "
        "and with QDRANT_URL a run may ask for multiprocess in its run config.",
    )
    first_sync_executor: Literal["in_process", "multiprocess"] = Field(
        default="in_process",
        validation_alias="ETL_FIRST_SYNC_EXECUTOR",
        description="ETL_FIRST_SYNC_EXECUTOR: with QDRANT_URL and no ETL_EXECUTOR, the executor the sync schedule and "
        "the change sensors ask for on a tenant's first sync.",
    )
    sync_cron: str = Field(
        default="0 * * * *",
        validation_alias="ETL_SYNC_CRON",
        description="ETL_SYNC_CRON: cron of the sync_all_tenants schedule.",
    )
    reconcile_cron: str = Field(
        default="30 3 * * *",
        validation_alias="ETL_RECONCILE_CRON",
        description="ETL_RECONCILE_CRON: cron of the reconcile_issue_deletions schedule.",
    )
    permissions_cron: str = Field(
        default="*/30 * * * *",
        validation_alias="ETL_PERMISSIONS_CRON",
        description="ETL_PERMISSIONS_CRON: cron of the permissions_all_tenants schedule (access rules, payloads only).",
    )
    change_sensor_interval_s: PositiveInt = Field(
        default=300,
        validation_alias="ETL_CHANGE_SENSOR_INTERVAL_S",
        description="ETL_CHANGE_SENSOR_INTERVAL_S: minimum interval of the jira_issue_changes sensor, seconds.",
    )
    automation_interval_s: PositiveInt = Field(
        default=30,
        validation_alias="ETL_AUTOMATION_INTERVAL_S",
        description="ETL_AUTOMATION_INTERVAL_S: minimum interval of the vectors_follow_tables sensor, seconds.",
    )
    raw_keep_batches: str | None = Field(
        default=None,
        validation_alias="ETL_RAW_KEEP_BATCHES",
        description="ETL_RAW_KEEP_BATCHES: consumed raw batches kept per tenant and entity (default 3): N for "
        "every entity and/or entity=N, separated by commas, e.g. '3,issues=10'.",
    )
    raw_keep_days: str | None = Field(
        default=None,
        validation_alias="ETL_RAW_KEEP_DAYS",
        description="ETL_RAW_KEEP_DAYS: no consumed raw batch older than this many days (default: no age limit); "
        "N and/or entity=N, e.g. 'issues=30'.",
    )
    maintenance_cron: str = Field(
        default="15 4 * * 0",
        validation_alias="ETL_MAINTENANCE_CRON",
        description="ETL_MAINTENANCE_CRON: cron of the raw_maintenance schedule (SQLite: VACUUM when pruning "
        "freed 10 % of the file; PostgreSQL: nothing, autovacuum).",
    )
    embedding: EmbeddingSettings = Field(
        default_factory=EmbeddingSettings,
        description="EMBEDDING_*, OPENAI_API_KEY, OPENAI_BASE_URL: see EmbeddingSettings.",
    )

    @field_validator("data_dir", "tenants_file", "qdrant_path")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Fixed when read, so a later chdir (or a step process) sees the same place.
        return None if value is None else value.expanduser().absolute()

    @field_validator("qdrant_url")
    @classmethod
    def _qdrant_url_is_http(cls, value: str | None) -> str | None:
        return _http_url(
            value, "use the http(s) URL of a Qdrant server, or unset it to use the local folder QDRANT_PATH"
        )

    @field_validator("raw_keep_batches")
    @classmethod
    def _keep_batches(cls, value: str | None) -> str | None:
        RawRetention.parse(value, None)  # a ValueError names the part it cannot read
        return value

    @field_validator("raw_keep_days")
    @classmethod
    def _keep_days(cls, value: str | None) -> str | None:
        RawRetention.parse(None, value)
        return value

    @field_validator("sync_cron", "reconcile_cron", "permissions_cron", "maintenance_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not _CRON.fullmatch(value.strip()):
            raise ValueError("use a cron expression of five fields, e.g. '0 * * * *'")
        return value.strip()

    @model_validator(mode="after")
    def _first_sync_executor_needs_a_server(self) -> Settings:
        if self.first_sync_executor == "multiprocess" and not self.qdrant_url and self.executor is None:
            raise SettingsError(
                "ETL_FIRST_SYNC_EXECUTOR=multiprocess is not allowed without QDRANT_URL: the embedded store's folder "
                "is held by one process at a time (set QDRANT_URL, or unset ETL_FIRST_SYNC_EXECUTOR)"
            )
        return self

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings of ``env``, or of the process environment read once and cached.

        Raises :class:`SettingsError` (:class:`EmbeddingConfigError` for the embedding
        variables) with one line naming the variable.
        """
        if env is None:
            return _process_settings()
        return cls._read(env)

    @classmethod
    def _read(cls, environ: Mapping[str, str]) -> Settings:
        embedding = _EmbeddingEnvironment(**_Environment(_EmbeddingEnvironment, environ)()).plain()
        try:
            return cls(**_Environment(cls, environ)(), embedding=embedding)
        except ValidationError as exc:
            raise SettingsError(describe_validation_error(exc, cls.env_name)) from None

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable of a field (``database_url`` -> ``DATABASE_URL``, ``api_key`` ->
        ``OPENAI_API_KEY``); a name that already is a variable is returned as it is."""
        info = cls.model_fields.get(field)
        if info is not None and isinstance(info.validation_alias, str):
            return info.validation_alias
        return _embedding_name(field) if field in _EmbeddingEnvironment.model_fields else field

    @classmethod
    def clear_cache(cls) -> None:
        """Forget the process environment read by ``load()``: the next call reads it again."""
        _process_settings.cache_clear()

    @property
    def database(self) -> str:
        """The SQLAlchemy URL to use: DATABASE_URL, else SQLite under the data directory."""
        return self.database_url or f"sqlite:///{self.data_dir / 'etl.db'}"

    @property
    def raw_retention(self) -> RawRetention:
        """How long consumed raw batches are kept, per entity (``ETL_RAW_KEEP_BATCHES`` / ``_DAYS``)."""
        return RawRetention.parse(self.raw_keep_batches, self.raw_keep_days)

    @property
    def qdrant(self) -> QdrantSettings:
        return QdrantSettings(
            self.qdrant_url, self.qdrant_api_key, str(self.qdrant_path or self.data_dir / "qdrant"), self.qdrant_engine
        )

    @property
    def executor_kind(self) -> Literal["in_process", "multiprocess", "per_run"]:
        """The Dagster executor of runs: ``ETL_EXECUTOR`` for every run when set; else ``per_run``
        with a Qdrant server (in process unless a run's config asks for multiprocess: see
        ``defs/executor.py``), and ``in_process`` with the embedded store, whose folder one
        process holds at a time."""
        return self.executor or ("per_run" if self.qdrant_url else "in_process")

    @property
    def first_sync_multiprocess(self) -> bool:
        """Whether a tenant's first sync asks for the multiprocess executor (``ETL_FIRST_SYNC_EXECUTOR``)."""
        return self.executor_kind == "per_run" and self.first_sync_executor == "multiprocess"

    @property
    def dagster_home(self) -> Path:
        """Where a local Dagster instance lives when DAGSTER_HOME is not set (the demo's)."""
        return self.data_dir / "dagster_home"


@functools.cache
def _process_settings() -> Settings:
    return Settings._read(os.environ)
