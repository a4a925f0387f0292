"""What a GitHub sync costs when nothing changed, against the first (full) sync of the same org.

Runs the GitHub entities' fetches (the raw stage: what reaches GitHub) against the loopback fake
(``etl_assets.fakes.github_server``) with the ETag cache in a SQLite database, three times: the
first full sync, the first incremental one (new ``since`` URLs), then a sync where nothing
changed, with and without the reconciliation's full listing. Prints requests, 304s, rate limit
spent, bytes of response bodies transferred and wall time, and the ratios to the full sync.

    .venv/bin/python benchmarks/bench_github_sync.py [--repos 10 --items 3000 --comments 3000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import create_engine

from etl_assets.core import pipeline
from etl_assets.core.sources.github.client import EtagCache, GitHubClient
from etl_assets.core.sources.github.sample import generate_sample_org
from etl_assets.core.sources.github.specs import SPECS
from etl_assets.core.store import ops
from etl_assets.core.tenants import TenantRegistry
from etl_assets.fakes.github_server import GitHubServer

TOKEN = "ghp_bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=10)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--comments", type=int, default=3000)
    args = parser.parse_args()
    site = generate_sample_org("bench", n_repos=args.repos, n_items=args.items, n_comments=args.comments)
    with tempfile.TemporaryDirectory() as tmp, GitHubServer(site, token=TOKEN) as gh:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        ops.create_schema(engine)
        tenant = TenantRegistry.from_mapping(
            {
                "tenants": [
                    {
                        "id": "b",
                        "jira": {"url": "sample://x"},
                        "github": {"url": gh.api_url, "org": "bench", "token_env": "X"},
                    }
                ]
            }
        ).get("b")

        def sync(label: str, *, reconcile: bool = False) -> dict[str, float]:
            requests, remaining, body = gh.handler.requests, gh.handler.remaining, 0
            started = time.perf_counter()
            with httpx.Client(base_url=gh.api_url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                client = GitHubClient(http, "b", gh.api_url, cache=EtagCache(engine, "b"), secret=TOKEN)
                for spec in SPECS:
                    plans, _ = pipeline.plan_fetches(
                        engine, spec, tenant, reconcile=reconcile, overlap=timedelta(minutes=10), page_size=100
                    )
                    for plan in plans:
                        pages = list(pipeline.fetch(spec, client, plan))
                        body += sum(len(p.body) for p in pages if p.status != 304)
                        ops.land_raw(engine, spec, "b", pages, kind=plan.kind)
                    ops.build_table(engine, spec, "b")
            return {
                "label": label,  # type: ignore[dict-item]
                "requests": gh.handler.requests - requests,
                "not_modified": client.stats.not_modified,
                "rate_limit_spent": remaining - gh.handler.remaining,
                "body_bytes": body,
                "seconds": time.perf_counter() - started,
            }

        rows = [
            sync("first sync (full)"),
            sync("first incremental (new since)"),
            sync("no change, incremental"),
            sync("no change, with reconciliation", reconcile=True),
        ]
    full = rows[0]
    print(f"org: {args.repos} repositories, {args.items} issues+PRs, {args.comments} comments")
    print(f"{'sync':34} {'requests':>8} {'304s':>6} {'rate limit':>10} {'bytes':>11} {'seconds':>8}  vs full")
    for r in rows:
        ratio = (
            f"{r['rate_limit_spent'] / full['rate_limit_spent']:.3f} limit, {r['seconds'] / full['seconds']:.2f} time"
        )
        print(
            f"{r['label']:34} {r['requests']:>8} {r['not_modified']:>6} {r['rate_limit_spent']:>10} "
            f"{r['body_bytes']:>11,} {r['seconds']:>8.2f}  {ratio}"
        )


if __name__ == "__main__":
    main()
