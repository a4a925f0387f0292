"""The project's command line: ``etl-assets demo``, ``search``, ``home`` and ``doctor``.

Every command reads the environment through :class:`~etl_assets.core.settings.Settings`; a
configuration error (:class:`~etl_assets.core.errors.ConfigError`) ends the command with one
line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etl_assets.core.catalogue import CATALOGUE
from etl_assets.core.errors import ConfigError

if TYPE_CHECKING:
    import dagster as dg

    from etl_assets.core.search import Hit, SourceHit
    from etl_assets.core.settings import Settings
    from etl_assets.core.tenants import Tenant

PROG = "etl-assets"
# The instance settings for local use live at the top of the checkout, next to this package.
PROJECT_INSTANCE_YAML = Path(__file__).resolve().parent.parent / "dagster.yaml"
UI_COMMAND = "./dev.sh ui"
DEMO_LOGGER = "demo_steps"


# -- DAGSTER_HOME --------------------------------------------------------------------------------------


def ensure_dagster_home(settings: Settings) -> Path:
    """The Dagster instance folder to use, created with the project's ``dagster.yaml`` if it has none.

    ``$DAGSTER_HOME`` when set, else ``<ETL_DATA_DIR>/dagster_home`` (the folder ``./dev.sh ui``
    opens). It is exported to this process, so Dagster finds the same instance.
    """
    home = Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home).expanduser().absolute()
    home.mkdir(parents=True, exist_ok=True)
    # An existing dagster.yaml is the operator's (a deployment's, say): never overwrite it.
    if not (home / "dagster.yaml").exists() and PROJECT_INSTANCE_YAML.exists():
        shutil.copyfile(PROJECT_INSTANCE_YAML, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _ui_hint(home: Path) -> str:
    """How to open the UI on ``home``: ./dev.sh ui opens ./.data/dagster_home unless told otherwise."""
    if home == (Path.cwd() / ".data" / "dagster_home").absolute():
        return UI_COMMAND
    return f"DAGSTER_HOME={home} {UI_COMMAND}"


def _home(args: argparse.Namespace) -> int:
    from etl_assets.core.settings import Settings

    print(ensure_dagster_home(Settings.load()))
    return 0


# -- demo ----------------------------------------------------------------------------------------------


def _mark(ok: bool) -> str:
    symbol = "✓" if ok else "✗"
    try:
        symbol.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "ok" if ok else "FAILED"
    return symbol


def _figure(metadata: dict[str, Any]) -> str:
    """The number an operator looks for in a step's materialization: points, rows or records."""

    def num(key: str) -> int:
        value = metadata.get(key)
        value = getattr(value, "value", value)  # Dagster wraps metadata in MetadataValue
        return int(value) if isinstance(value, int | float) else 0

    if "points_total" in metadata:
        return f"{num('points_total')} points, {num('rows_changed')} rows embedded"
    if "live_rows" in metadata:
        changes = [f"{num(k)} {word}" for k, word in (("inserted", "new"), ("updated", "updated")) if num(k)]
        changes += [f"{num('deleted')} deleted"] if num("deleted") else []
        return ", ".join([f"{num('live_rows')} rows", *changes])
    if "records" in metadata:
        return f"{num('records')} records fetched"
    return ""


# Dagster's wrappers around the exception raised in an asset or a resource: their cause is ours.
_DAGSTER_WRAPPERS = (
    "DagsterExecutionStepExecutionError",
    "DagsterResourceFunctionError",
    "DagsterUserCodeExecutionError",
)


def error_line(error: Any, limit: int = 400) -> str:
    """An exception as Dagster recorded it (``SerializableErrorInfo``) as one line, without traceback."""
    while error.cls_name in _DAGSTER_WRAPPERS and error.cause is not None:
        error = error.cause
    text = " ".join(line.strip() for line in (error.message or "").splitlines() if line.strip())
    if not text:
        return error.cls_name or "unknown error"
    # "etl_assets.core.tenants.TenantConfigError: ..." reads as "TenantConfigError: ...", and a
    # dagster Failure raised on purpose is its description alone.
    kind, sep, rest = text.partition(": ")
    if sep and " " not in kind:
        text = rest if error.cls_name == "Failure" else f"{kind.rpartition('.')[2]}: {rest}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


class StepLines(logging.Handler):
    """Prints one line per finished step of a demo run, from the run's Dagster events.

    It is the only logger of the demo's runs: Dagster's console logger (DEBUG lines for every
    event) is left out, while the instance still records every event for the UI.
    """

    def __init__(self, tenant: str, asset_names: dict[str, str]) -> None:
        super().__init__(level=logging.DEBUG)
        self.tenant = tenant
        self.asset_names = asset_names
        self.width = max(map(len, asset_names.values()), default=0)
        self.figures: dict[str, str] = {}
        self.warnings: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        import dagster as dg

        event = getattr(record, "dagster_event", None)
        if not isinstance(event, dg.DagsterEvent):
            meta = getattr(record, "dagster_meta", None) or {}
            if record.levelno >= logging.WARNING and meta.get("step_key"):
                self.warnings[meta["step_key"]] = self.warnings.get(meta["step_key"], 0) + 1
            return
        step = event.step_key or ""
        if event.is_step_materialization:
            self.figures[step] = _figure(dict(event.step_materialization_data.materialization.metadata))
        elif event.is_step_success:
            self._line(step, True, event.step_success_data.duration_ms / 1000)
        elif event.is_step_failure:
            self._line(step, False, None)

    def _line(self, step: str, ok: bool, seconds: float | None) -> None:
        name = self.asset_names.get(step, step)
        took = f"{seconds:5.1f}s" if seconds is not None else " " * 6
        extra = self.figures.get(step, "") if ok else "failed"
        if self.warnings.get(step):
            extra += f" ({self.warnings[step]} warnings: see the run in the UI)"
        print(f"tenant {self.tenant}  {name:<{self.width}}  {_mark(ok)} {took}  {extra}".rstrip(), flush=True)


def _quiet_job(job: dg.JobDefinition, handler: StepLines) -> dg.JobDefinition:
    import dagster as dg

    @dg.logger(config_schema=None, description="One line per finished step for etl-assets demo.")
    def demo_steps(_context: dg.InitLoggerContext) -> logging.Logger:
        # Not registered with logging.getLogger: it belongs to this run only.
        logger = logging.Logger("etl_assets.demo", level=logging.DEBUG)
        logger.addHandler(handler)
        return logger

    return job.with_logger_defs({DEMO_LOGGER: demo_steps})


def _run_config(job: dg.JobDefinition, tenant: str) -> dict[str, Any]:
    """The partition's own run config, plus the demo's logger: Dagster starts only loggers the run config names."""
    partitioned = job.partitioned_config
    config = dict(partitioned.get_run_config_for_partition_key(tenant)) if partitioned else {}
    return {**config, "loggers": {DEMO_LOGGER: {}}}


def _failure_line(result: dg.ExecuteInProcessResult, tenant: str, asset_names: dict[str, str], hint: str) -> str:
    failures = result.get_step_failure_events()
    if failures:
        first = failures[0]
        where = f"step {asset_names.get(first.step_key or '', first.step_key)}"
        message = error_line(first.step_failure_data.error) if first.step_failure_data.error else "failed"
        if len(failures) > 1:
            message += f" (and {len(failures) - 1} more failed steps)"
    else:  # the run failed outside any step, e.g. while a resource was set up
        where = "the run"
        ends = result.filter_events(lambda event: event.is_run_failure)
        error = getattr(ends[-1].event_specific_data, "error", None) if ends else None
        message = error_line(error) if error is not None else "failed before any step ran"
    return f"{PROG} demo: tenant {tenant}: {where} failed: {message} — logs: {hint} → Runs → {result.run_id}"


def _demo(args: argparse.Namespace) -> int:
    from etl_assets.core.settings import Settings
    from etl_assets.core.tenants import TenantRegistry, UnknownTenantError

    settings = Settings.load()
    registry = TenantRegistry.load(settings.tenants_file)
    try:
        tenants = [registry.get(t).id for t in args.tenant] if args.tenant else registry.ids
    except UnknownTenantError as exc:
        print(f"{PROG} demo: {exc}", file=sys.stderr)
        return 2
    home = ensure_dagster_home(settings)
    hint = _ui_hint(home)

    import dagster as dg

    from etl_assets.defs.build import build_definitions
    from etl_assets.defs.names import SYNC_JOB, op_name, raw_key, table_key, vector_key

    defs = build_definitions(settings=settings, registry=registry)
    job = defs.resolve_job_def(SYNC_JOB)
    asset_names = {
        op_name(key(spec)): key(spec).to_user_string()
        for spec in CATALOGUE
        for key in ((vector_key,) if spec.parent else (raw_key, table_key, vector_key))
    }
    print(f"Materializing every asset of tenant {', '.join(tenants)}; Dagster's logs: {hint} → Runs", flush=True)
    started = time.monotonic()
    with dg.DagsterInstance.get() as instance:
        for tenant in tenants:
            run = _quiet_job(job, StepLines(tenant, asset_names))
            result = run.execute_in_process(
                run_config=_run_config(run, tenant), partition_key=tenant, instance=instance, raise_on_error=False
            )
            if not result.success:
                print(_failure_line(result, tenant, asset_names, hint), file=sys.stderr)
                return 1
    who = search_user_hint(registry.get(tenants[0]))
    _print_summary(dict(defs.resources or {}), tenants, hint, time.monotonic() - started, who)
    return 0


def search_user_hint(tenant: Tenant) -> str:
    """Whom the closing hint's search runs as: a sample site's administrator (its first user),
    else a placeholder for the operator's own Jira e-mail."""
    from etl_assets.core.sources.jira.source import jira_site

    if jira_site(tenant).is_sample:
        from etl_assets.core.sources.jira.sample import permission_fixture_for

        fixture = permission_fixture_for(jira_site(tenant).url)
        if fixture is not None and fixture.users:
            return str(next(iter(fixture.users.values()))["emailAddress"])
    return "YOUR_JIRA_EMAIL"


def _print_summary(
    resources: dict[str, Any], tenants: Sequence[str], hint: str, seconds: float, who: str = "YOUR_JIRA_EMAIL"
) -> None:
    from etl_assets.core.store import ops
    from etl_assets.core.store.db import make_engine, safe_url
    from etl_assets.core.vectorstore import collection_name, open_qdrant

    qd = resources["qdrant"]

    async def counts() -> dict[tuple[str, str], int]:
        out = {}
        async with open_qdrant(qd.url, qd.api_key, qd.path, engine=qd.engine) as client:
            for tenant in tenants:
                for spec in CATALOGUE:
                    name = collection_name(tenant, spec.name)
                    exists = await client.collection_exists(name)
                    out[(tenant, spec.name)] = (await client.count(name)).count if exists else 0
        return out

    points = asyncio.run(counts())
    engine = make_engine(resources["database"].url)
    try:
        rows = {(t, spec.name): ops.count_rows(engine, spec, t) for t in tenants for spec in CATALOGUE}
    finally:
        engine.dispose()
    print()
    wide = max(len("entity"), *(len(spec.name) for spec in CATALOGUE)) + 2
    print(f"{'tenant':<8}{'entity':<{wide}}{'live rows':>10}{'points':>8}  collection")
    for tenant in tenants:
        for spec in CATALOGUE:
            name = collection_name(tenant, spec.name)
            counts_ = f"{rows[(tenant, spec.name)]:>10}{points[(tenant, spec.name)]:>8}"
            print(f"{tenant:<8}{spec.name:<{wide}}{counts_}  {name}")
    print()
    print(f"Done in {seconds:.0f}s. database: {safe_url(resources['database'].url)}")
    print(f"qdrant:   {'the server at QDRANT_URL' if qd.url else qd.path}")
    print(f'Try a search:   {PROG} search "login fails with unicode password" --tenant {tenants[0]} --as {who}')
    print(f"Open the UI:    {hint}   (http://127.0.0.1:3000 — Assets, pick a tenant partition, Materialize)")


# -- search --------------------------------------------------------------------------------------------


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: wide (CJK, most emoji) characters count 2, combining marks 0."""
    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf", "Cc"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def fit(text: str, width: int) -> str:
    """``text`` on one line, cut with '…' or padded with spaces to exactly ``width`` columns."""
    text = " ".join("".join(c for c in text if unicodedata.category(c) != "Cc" or c.isspace()).split())
    if display_width(text) > width:
        out, used = "", 0
        for char in text:
            w = display_width(char)
            if used + w > width - 1:  # keep a column for the ellipsis
                break
            out, used = out + char, used + w
        text = out + "…"
    return text + " " * (width - display_width(text))


def format_hits(hits: Sequence[Hit | SourceHit], title_width: int = 60, *, with_source: bool = False) -> list[str]:
    """The hits as a table with a header; columns line up on a terminal, CJK titles included.

    ``with_source`` adds a ``source`` column after the score (hits of a search across sources).
    """
    rows = [
        (
            f"{hit.score:.3f}",
            *((str(getattr(hit, "source", "")),) if with_source else ()),
            hit.key,
            str(hit.payload.get("summary") or hit.payload.get("title") or hit.payload.get("name") or ""),
            str(hit.payload.get("project_key") or hit.payload.get("repo") or ""),
            str(
                hit.payload.get("status")
                or hit.payload.get("status_category")
                or hit.payload.get("category")
                or hit.payload.get("state")
                or ""
            ),
        )
        for hit in hits
    ]
    header = ("score", *(("source",) if with_source else ()), "key", "title", "project", "status")
    key, title = header.index("key"), header.index("title")
    # Columns no hit fills (project and status of work item types, say) are left out, and so is
    # the title where it only repeats the key (statuses and work item types are known by name).
    keep = [
        i
        for i in range(len(header))
        if i <= key or any(row[i] and (i != title or row[title] != row[key]) for row in rows)
    ]
    widths = [max(display_width(" ".join(r[i].split())) for r in [header, *rows]) for i in range(len(header))]
    widths[title] = min(widths[title], title_width)
    lines = []
    for row in [header, *rows]:
        cells = [fit(row[i], widths[i]) for i in keep]
        cells[0] = cells[0].strip().rjust(widths[0])  # scores align on the decimal point
        lines.append("  ".join(cells).rstrip())
    return lines


def catalogue_sources() -> list[str]:
    """Every source the catalogue knows, in catalogue order."""
    return list(dict.fromkeys(spec.source for spec in CATALOGUE))


def tenant_sources(tenant: Tenant) -> list[str]:
    """The sources ``tenant`` indexes: those its registry entry has a section for (``jira``, ``github``)."""
    return [s for s in catalogue_sources() if tenant.section(s) is not None]


def parse_sources(values: Sequence[str] | None) -> list[str] | None:
    """``--source`` values (repeated and/or comma lists) as a list without repeats; None when not given.

    Raises ValueError with a one-line message naming the known sources for an unknown one."""
    if not values:
        return None
    known = catalogue_sources()
    out: list[str] = []
    for value in values:
        for name in (part.strip().lower() for part in value.split(",")):
            if not name:
                continue
            if name not in known:
                raise ValueError(f"unknown source {name!r} in --source; known sources: {', '.join(known)}")
            if name not in out:
                out.append(name)
    if not out:
        raise ValueError(f"--source names no source; known sources: {', '.join(known)}")
    return out


def _search(args: argparse.Namespace) -> int:
    from etl_assets.core.catalogue import BY_NAME
    from etl_assets.core.embeddings.base import ModelMismatchError
    from etl_assets.core.embeddings.factory import open_embedder
    from etl_assets.core.search import (
        FieldFilter,
        SearchError,
        check_query,
        issue_keys,
        resolve_access,
        search,
        search_sources,
    )
    from etl_assets.core.settings import Settings
    from etl_assets.core.store.db import make_engine
    from etl_assets.core.tenants import TenantRegistry, UnknownTenantError
    from etl_assets.core.vectorstore import QdrantServerError, open_qdrant, server_errors_named

    def fail(message: str) -> int:
        print(f"{PROG} search: {message}", file=sys.stderr)
        return 2

    query = args.query  # embedded as given: the model, not the CLI, decides what whitespace means
    try:
        check_query(query)
        requested = parse_sources(args.source)
        custom = [FieldFilter.parse(text) for text in args.field or ()]
    except (SearchError, ValueError) as exc:
        return fail(str(exc))
    settings = Settings.load()
    try:
        found_tenant = TenantRegistry.load(settings.tenants_file).get(args.tenant)
    except UnknownTenantError as exc:
        return fail(str(exc))
    tenant = found_tenant.id
    has = tenant_sources(found_tenant)
    missing = [s for s in requested or [] if s not in has]
    if missing:
        return fail(f"tenant {tenant} has no {', '.join(missing)} source (its sources: {', '.join(has)})")
    entity: str = args.entity or "issues"
    if args.entity is not None and requested is not None and BY_NAME[args.entity].source not in requested:
        return fail(
            f"--entity {args.entity} is a {BY_NAME[args.entity].source} entity, not of --source {','.join(requested)}"
        )
    jira_filter = bool(args.project or args.status_category or custom)
    if jira_filter and requested is not None and requested != ["jira"]:
        return fail("--project, --status-category and --field filter Jira issues only: use them with --source jira")
    # Across sources unless one entity was asked for, or only Jira is searched (a Jira-only tenant,
    # or a Jira filter): then the Jira issue search as it always was, with its exact-key notes.
    sources = requested or (["jira"] if jira_filter else has)
    across = args.entity is None and (requested is not None or sources != ["jira"])
    qd = settings.qdrant
    access: frozenset[str] | None = None
    if args.unrestricted:
        who = os.environ.get("USER") or os.environ.get("LOGNAME") or f"uid {os.getuid()}"
        logging.getLogger("etl_assets.search").warning(
            "unrestricted search of tenant %s by %s: no access filter", tenant, who
        )
    else:
        engine = make_engine(settings.database, create=False)
        try:
            access = resolve_access(engine, tenant, args.as_user)
        except SearchError as exc:
            return fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - the tables may not exist yet; the driver's text may name the host
            return fail(
                f"tenant {tenant}'s permission tables could not be read ({type(exc).__name__}): "
                "run the sync first (etl-assets demo, or materialize tables/permissions_table)"
            )
        finally:
            engine.dispose()

    async def run() -> Sequence[Hit | SourceHit]:
        async with (
            open_embedder(settings.embedding) as embedder,
            open_qdrant(qd.url, qd.api_key, qd.path, engine=qd.engine) as client,
            server_errors_named(qd.url),
        ):
            common: dict[str, Any] = {"tenant_id": tenant, "access": access, "k": args.k, "mode": args.mode}
            if across:
                return await search_sources(client, embedder, query, sources=sources, **common)
            return await search(
                client,
                embedder,
                query,
                entity=entity,
                project=args.project,
                status_category=args.status_category,
                custom_fields=custom,
                **common,
            )

    try:
        hits = asyncio.run(run())
    except (ModelMismatchError, LookupError, QdrantServerError, SearchError) as exc:
        return fail(str(exc))
    found = {h.key for h in hits if getattr(h, "exact_key", False)}
    for key in issue_keys(query) if entity == "issues" and not across else []:
        if key not in found and (hits or query.strip().upper() == key):
            print(f"note: issue {key} is not in the index (deleted at the source, not synced yet, or filtered out)")
    if not hits:
        what = f"issues and pull requests in {', '.join(sources)}" if across else entity
        visible = "" if args.unrestricted else f" that {args.as_user} may open"
        print(
            f"no good match: nothing in tenant {tenant}'s {what}{visible} scored above the {args.mode} mode's "
            "threshold; try other words"
        )
        return 0
    columns = shutil.get_terminal_size((120, 24)).columns
    # What the title may take: the terminal less score, (source,) key, project and status columns.
    width = max(30, min(70, columns - (58 if across else 50)))
    for line in format_hits(hits, title_width=width, with_source=across):
        print(line)
    return 0


# -- doctor --------------------------------------------------------------------------------------------


def _doctor(args: argparse.Namespace) -> int:
    from etl_assets.core.doctor import DoctorTargets, format_checks, run_doctor
    from etl_assets.core.settings import Settings
    from etl_assets.core.sources.jira.doctor import jira_checks
    from etl_assets.core.tenants import TenantRegistry, UnknownTenantError

    settings = Settings.load()
    registry = TenantRegistry.load(settings.tenants_file)
    try:
        tenants = [registry.get(t).id for t in args.tenant] if args.tenant else None
    except UnknownTenantError as exc:
        print(f"{PROG} doctor: {exc}", file=sys.stderr)
        return 2
    checks = run_doctor(registry, DoctorTargets.from_settings(settings), tenants, source_checks=[jira_checks()])
    for line in format_checks(checks, (_mark(True), _mark(False))):
        print(line)
    failed = sum(1 for c in checks if not c.ok)
    print()
    print(f"{failed} of {len(checks)} checks failed: apply the fixes above" if failed else "every check passed")
    return 1 if failed else 0


# -- main ----------------------------------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("use a whole number of 1 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Run the demo graph, search a tenant's collections, find the Dagster instance folder."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the whole graph on the registry's tenants and print what landed")
    demo.add_argument("--tenant", action="append", help="tenant id (repeatable); default: every tenant")
    demo.set_defaults(func=_demo)
    s = sub.add_parser("search", help="search a tenant's collection (hybrid: meaning and exact words)")
    s.add_argument("query", help="the words to search for")
    s.add_argument("--tenant", required=True, help="tenant id from the registry (ETL_TENANTS_FILE)")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--as",
        dest="as_user",
        metavar="USER",
        help="search as this Jira user (e-mail or accountId): only what they may open in Jira comes back",
    )
    who.add_argument(
        "--unrestricted",
        action="store_true",
        help="operators: no access filter at all (every point of the tenant); logged",
    )
    names = [spec.name for spec in CATALOGUE]
    s.add_argument(
        "--entity",
        choices=names,
        help="search this one entity only; default: the issues (and pull requests) of every source searched",
    )
    s.add_argument(
        "--source",
        action="append",
        metavar="SOURCE",
        help=f"only hits from these sources ({', '.join(catalogue_sources())}; repeatable or a comma list); "
        "default: every source the tenant indexes",
    )
    s.add_argument("--project", help="only issues of this project key")
    s.add_argument("--status-category", choices=["new", "indeterminate", "done"], help="only this status category")
    s.add_argument(
        "--field",
        action="append",
        metavar="NAME=VALUE",
        help="only issues whose custom field (the tenant's jira.custom_fields, by name) matches: 'Team=Falcon', "
        "'Story Points>=5', 'Target date<2026-07-01' (=, >=, >, <=, <; repeatable, all must hold)",
    )
    s.add_argument("-k", type=_positive, default=10, help="number of hits")
    s.add_argument(
        "--mode",
        choices=["dense", "sparse", "hybrid"],
        default="hybrid",
        help="hybrid (default): meaning and exact words fused; dense: meaning only; sparse: words only (BM25)",
    )
    s.set_defaults(func=_search)
    home = sub.add_parser(
        "home",
        help="print the Dagster instance folder (DAGSTER_HOME, else <ETL_DATA_DIR>/dagster_home), "
        "created with the project's dagster.yaml: export DAGSTER_HOME=$(etl-assets home)",
    )
    home.set_defaults(func=_home)
    doctor = sub.add_parser(
        "doctor", help="check Jira, the embeddings endpoint, Qdrant and the database; exit 1 if anything fails"
    )
    doctor.add_argument("--tenant", action="append", help="tenant id (repeatable); default: every tenant")
    doctor.set_defaults(func=_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "mcp":  # the MCP server parses its own arguments (etl-assets mcp --help)
        from etl_assets.mcp_server import main as mcp_main

        return mcp_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        # The message already names the variable or file:line and what is allowed.
        print(f"{PROG}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
