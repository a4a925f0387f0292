"""The one entry point: ``dagster ... -m etl_assets.definitions`` loads :func:`defs`."""

from __future__ import annotations

import dagster as dg

from etl_assets.defs.build import build_definitions


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
