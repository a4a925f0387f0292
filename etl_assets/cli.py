"""The project's command line: ``etl-assets demo`` and ``etl-assets search``."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from etl_assets.core.settings import DATA_DIR

    os.environ.setdefault("DAGSTER_HOME", str(DATA_DIR / "dagster_home"))
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        from etl_assets.core.settings import PROJECT_ROOT

        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    import dagster as dg

    from etl_assets.core.catalogue import CATALOGUE
    from etl_assets.core.store import ops
    from etl_assets.core.vectorstore import collection_name
    from etl_assets.defs.names import SYNC_JOB
    from etl_assets.defs.build import build_definitions

    defs = build_definitions()
    job = defs.resolve_job_def(SYNC_JOB)
    resources = defs.resources
    tenants = args.tenant or list(job.partitions_def.get_partition_keys())  # type: ignore[union-attr]
    with dg.DagsterInstance.get() as instance:
        for tenant in tenants:
            print(f"== materializing every asset for tenant {tenant} ...", flush=True)
            result = job.execute_in_process(partition_key=tenant, instance=instance, raise_on_error=False)
            if not result.success:
                print(
                    f"run {result.run_id} for tenant {tenant} FAILED; see `dagster dev` for its logs", file=sys.stderr
                )
                return 1
    from etl_assets.core.store.db import make_engine, safe_url
    from etl_assets.core.vectorstore import display_url, open_qdrant

    engine = make_engine(resources["database"].url)
    qd = resources["qdrant"]

    async def counts() -> dict[tuple[str, str], int]:
        out = {}
        async with open_qdrant(qd.url, qd.api_key, qd.path) as client:
            for tenant in tenants:
                for spec in CATALOGUE:
                    name = collection_name(tenant, spec.name)
                    out[(tenant, spec.name)] = (
                        (await client.count(name)).count if await client.collection_exists(name) else 0
                    )
        return out

    points = asyncio.run(counts())
    print()
    print(f"{'tenant':<8}{'entity':<10}{'live rows':>10}{'points':>8}  collection")
    for tenant in tenants:
        for spec in CATALOGUE:
            rows = ops.count_rows(engine, spec, tenant)
            print(
                f"{tenant:<8}{spec.name:<10}{rows:>10}{points[(tenant, spec.name)]:>8}  {collection_name(tenant, spec.name)}"
            )
    engine.dispose()
    print()
    print(f"database: {safe_url(resources['database'].url)}")
    print(f"qdrant:   {display_url(qd.url) if qd.url else qd.path}")
    print('Try a search:   etl-assets search "login fails with unicode password" --tenant 1')
    print("Open the UI:    ./dev.sh ui   (http://127.0.0.1:3000 — Assets, pick a tenant partition, Materialize)")
    return 0


def _search(args: argparse.Namespace) -> int:
    from etl_assets.core.embeddings.base import ModelMismatchError
    from etl_assets.core.embeddings.factory import EmbeddingConfigError, EmbeddingSettings, open_embedder
    from etl_assets.core.search import search
    from etl_assets.core.vectorstore import QdrantServerError, QdrantSettings, open_qdrant, server_errors_named

    qd = QdrantSettings.from_env(os.environ)

    async def run() -> list:
        async with (
            open_embedder(EmbeddingSettings.from_env(os.environ)) as embedder,
            open_qdrant(qd.url, qd.api_key, qd.path) as client,
            server_errors_named(qd.url),
        ):
            return await search(
                client,
                embedder,
                args.query,
                tenant_id=args.tenant,
                entity=args.entity,
                project=args.project,
                status_category=args.status_category,
                k=args.k,
            )

    try:
        hits = asyncio.run(run())
    except (ModelMismatchError, LookupError, EmbeddingConfigError, QdrantServerError) as exc:
        print(f"etl-assets search: {exc}", file=sys.stderr)
        return 2
    if not hits:
        print("no hits")
        return 0
    for hit in hits:
        p = hit.payload
        print(
            f"{hit.score:6.3f}  {hit.key:<12} {str(p.get('summary') or p.get('name') or '')[:70]:<70}  "
            f"{p.get('project_key') or '':<10} {p.get('status') or ''}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="etl-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the whole graph on the bundled sample tenants and print what landed")
    demo.add_argument("--tenant", action="append", help="tenant id (repeatable); default: every tenant")
    demo.set_defaults(func=_demo)
    s = sub.add_parser("search", help="semantic search over a tenant's collection")
    s.add_argument("query")
    s.add_argument("--tenant", required=True)
    s.add_argument("--entity", default="issues", choices=["issues", "projects", "wits", "statuses"])
    s.add_argument("--project", help="only issues of this project key")
    s.add_argument("--status-category", choices=["new", "indeterminate", "done"], help="only this status category")
    s.add_argument("-k", type=int, default=10, help="number of hits")
    s.set_defaults(func=_search)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
