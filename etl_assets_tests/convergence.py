"""Test helpers: exact convergence as an assertion, and running the graph with overrides.

:func:`assert_converged` is what every fault, crash and bad-input test ends with: after
the fault cleared and one more materialization, the tenant's state must be exactly what
a clean first sync would have produced. The checks themselves live in
:mod:`etl_assets.fakes.convergence` (the crash-consistency script uses them too) and are
re-exported here for the tests.

The remaining helpers run the graph with resource overrides and read what a run reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from etl_assets.fakes.convergence import convergence_problems, read_points, site_objects

__all__ = [
    "assert_converged",
    "convergence_problems",
    "failure_texts",
    "materialize",
    "read_points",
    "site_objects",
    "steps",
]

SNAPSHOT_LIMIT = 12  # problems listed per assertion; the count says how many there were


def assert_converged(env: Any, tenant_id: str, **kwargs: Any) -> None:
    """Tables equal the fake site (ids and key fields) and points equal live rows, exactly."""
    problems = convergence_problems(env, tenant_id, **kwargs)
    shown = "\n  ".join(problems[:SNAPSHOT_LIMIT])
    more = f"\n  ... and {len(problems) - SNAPSHOT_LIMIT} more" if len(problems) > SNAPSHOT_LIMIT else ""
    assert not problems, f"tenant {tenant_id!r} did not converge ({len(problems)} problems):\n  {shown}{more}"


# -- running the graph and reading what it reported ---------------------------------------------


def materialize(
    env: Any,
    tenant_id: str,
    selection: str | None = None,
    *,
    resources: Mapping[str, Any] | None = None,
    registry: Any = None,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    """Like ``env.materialize`` (never raising), with some resources replaced."""
    from etl_assets.defs.build import build_definitions

    defs = build_definitions(
        registry=registry or env.registry,
        resources={**env.resources(), **(resources or {})},
        env={"DATABASE_URL": env.database_url},
    )
    job = defs.resolve_implicit_global_asset_job_def()
    keys = list(dg.AssetSelection.from_string(selection).resolve(defs.resolve_asset_graph())) if selection else None
    return job.execute_in_process(
        partition_key=tenant_id, asset_selection=keys, raise_on_error=False, instance=instance
    )


def steps(result: dg.ExecuteInProcessResult, event_type: dg.DagsterEventType) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type == event_type and e.step_key}


def failure_texts(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """step key -> the whole error chain (messages, causes and stacks) its failure carried.

    A resource that failed to initialise is listed under its step, or under
    ``"<resources>"`` when the run initialised resources for all its steps at once.
    """
    out: dict[str, str] = {}
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE and event.step_failure_data.error:
            out[event.step_key] = event.step_failure_data.error.to_string()
        elif event.event_type == dg.DagsterEventType.RESOURCE_INIT_FAILURE:
            error = getattr(event.event_specific_data, "error", None)
            if error is not None:
                out[event.step_key or "<resources>"] = error.to_string()
    return out
