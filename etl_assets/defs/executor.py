"""The Dagster executor of runs, from ``Settings.executor_kind`` (README, "The executor").

- ``in_process``: every step of a run in the run's own process, one after another. The default
  with the embedded store (one process holds its folder), and what ``ETL_EXECUTOR=in_process``
  forces.
- ``multiprocess``: every step in a process of its own, independent steps in parallel
  (``ETL_EXECUTOR=multiprocess``).
- ``per_run`` (the default with a Qdrant server): a run is in process unless its run config
  says ``execution: {config: {multiprocess: {}}}`` — an operator's choice in the launchpad (a
  full re-sync of a big tenant), or the sync schedule's and the change sensors' on a tenant's
  first sync when ``ETL_FIRST_SYNC_EXECUTOR=multiprocess`` (:func:`first_sync_run_config`).
  Isolation is per run: the run launcher starts each run in a process (pod, container) of its own.

Why in process by default: a step process costs a Python start-up, Dagster's import and the
definitions' loading (seconds each, more on a busy machine), and a routine run's 15 steps find
little to do; even a first sync of 2,000 issues ran 1.8x faster in process on the 2-core
machine it was measured on (README, "The no-change run and the executor"). What in process gives
up is steps side by side (the issues' and the comments' vectors, the permissions): the
parallelism inside a step (the fan-out's requests, ``EMBEDDING_CONCURRENCY``) remains.
"""

from __future__ import annotations

from typing import Any, Literal

import dagster as dg

ExecutorKind = Literal["in_process", "multiprocess", "per_run"]

PER_RUN_EXECUTOR = "in_process_unless_asked"


def _per_run() -> dg.ExecutorDefinition:
    # Dagster's own choice of the two, with in_process as the default instead of multiprocess.
    choice = dg.multi_or_in_process_executor.config_schema.as_field().config_type
    return dg.multi_or_in_process_executor.configured(
        lambda config: config,
        name=PER_RUN_EXECUTOR,
        config_schema=dg.Field(
            choice,
            default_value={"in_process": {}},
            description="in_process (the default: steps one after another in the run's process) or multiprocess "
            "(each step in a process of its own, independent steps in parallel: a first sync, a full re-sync).",
        ),
    )


def run_executor(kind: ExecutorKind) -> dg.ExecutorDefinition:
    """The executor every job of the definitions uses."""
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "multiprocess":
        return dg.multiprocess_executor
    return _per_run()


def first_sync_run_config(multiprocess: bool) -> dict[str, Any]:
    """Run config for a run known to be a tenant's first sync: the multiprocess executor when
    ``Settings.first_sync_multiprocess`` (runs choose, and ETL_FIRST_SYNC_EXECUTOR asks for it)."""
    return {"execution": {"config": {"multiprocess": {}}}} if multiprocess else {}
