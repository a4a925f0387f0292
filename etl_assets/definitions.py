"""The one entry point: ``dg``/``dagster ... -m etl_assets.definitions`` loads :func:`defs`."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import dagster as dg

from etl_assets.core.errors import ConfigError
from etl_assets.core.settings import Settings
from etl_assets.defs.build import build_definitions

# Dagster 1.13's own parser of `dg launch --assets '*'` passes a beta argument
# (AssetSelection.all(include_sources=...)): not ours to fix, and noise in the documented flow.
warnings.filterwarnings("ignore", category=dg.BetaWarning, module=r"dagster\._core\.definitions\.antlr_asset_selection")

# Processes that serve definitions to a webserver or daemon: there, a load error must stay an
# exception, which Dagster shows in the UI as the code location's error.
_SERVER_COMMANDS = ("grpc", "code-server", "dev")


def _is_server_process(argv: list[str]) -> bool:
    return any(arg in _SERVER_COMMANDS for arg in argv[1:3])


# The definitions this process built, with the settings and the tenants file (path, mtime, size)
# they were built from. Dagster calls ``defs`` again each time it reconstructs the repository (five
# times in one `dagster asset materialize`); building and resolving them anew cost about 0.3 s each.
_built: tuple[Settings, tuple[str, int, int], dg.Definitions] | None = None


def _tenants_stamp(path: Path) -> tuple[str, int, int]:
    try:
        stat = path.stat()
    except OSError:  # build_definitions names the file in its error
        return (str(path), -1, -1)
    return (str(path), stat.st_mtime_ns, stat.st_size)


def _definitions() -> dg.Definitions:
    global _built
    settings = Settings.load()  # read once per process (Settings.clear_cache() reads again)
    stamp = _tenants_stamp(settings.tenants_file)
    if _built is not None and _built[0] is settings and _built[1] == stamp:
        return _built[2]
    built = build_definitions(settings=settings)
    _built = (settings, stamp, built)
    return built


@dg.definitions
def defs() -> dg.Definitions:
    try:
        return _definitions()
    except ConfigError as exc:
        if _is_server_process(sys.argv):
            raise
        # A one-shot command (`dg launch`, `dagster asset materialize`, ...): the operator needs the
        # one line naming the file:line or variable, not Dagster's 70-line loading traceback.
        sys.stderr.write(f"etl-assets: configuration error: {exc}\n")
        raise SystemExit(2) from None
