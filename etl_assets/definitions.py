"""The one entry point: ``dg``/``dagster ... -m etl_assets.definitions`` loads :func:`defs`."""

from __future__ import annotations

import sys
import warnings

import dagster as dg

from etl_assets.core.errors import ConfigError
from etl_assets.defs.build import build_definitions

# Dagster 1.13's own parser of `dg launch --assets '*'` passes a beta argument
# (AssetSelection.all(include_sources=...)): not ours to fix, and noise in the documented flow.
warnings.filterwarnings("ignore", category=dg.BetaWarning, module=r"dagster\._core\.definitions\.antlr_asset_selection")

# Processes that serve definitions to a webserver or daemon: there, a load error must stay an
# exception, which Dagster shows in the UI as the code location's error.
_SERVER_COMMANDS = ("grpc", "code-server", "dev")


def _is_server_process(argv: list[str]) -> bool:
    return any(arg in _SERVER_COMMANDS for arg in argv[1:3])


@dg.definitions
def defs() -> dg.Definitions:
    try:
        return build_definitions()
    except ConfigError as exc:
        if _is_server_process(sys.argv):
            raise
        # A one-shot command (`dg launch`, `dagster asset materialize`, ...): the operator needs the
        # one line naming the file:line or variable, not Dagster's 70-line loading traceback.
        sys.stderr.write(f"etl-assets: configuration error: {exc}\n")
        raise SystemExit(2) from None
