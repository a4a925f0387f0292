"""The baseline of ``bench_executor.py``: the cheapest useful Dagster run we can think of.

One asset, partitioned like ours, whose step makes one cheap request to the same loopback Jira
(``GET /rest/api/3/serverInfo``, the URL in ``BENCH_NOOP_URL``) and returns; the in-process
executor; the same Dagster instance (storage) as the runs it is compared with, launched the same
way. What our no-change run costs beyond it is our graph's steps and the work they do.
"""

from __future__ import annotations

import os

import dagster as dg
import httpx


@dg.asset(partitions_def=dg.StaticPartitionsDefinition(["bench"]), key=["bench", "noop"])
def noop() -> dg.MaterializeResult:
    """One request to the tenant's site, nothing stored."""
    answer = httpx.get(f"{os.environ['BENCH_NOOP_URL']}/rest/api/3/serverInfo", timeout=30)
    answer.raise_for_status()
    return dg.MaterializeResult(metadata={"status": answer.status_code})


defs = dg.Definitions(assets=[noop], executor=dg.in_process_executor)
