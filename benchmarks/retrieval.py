"""Retrieval quality of the local model on the sample site's labelled queries.

    .venv/bin/python benchmarks/retrieval.py [--k 5] [--json out.json]

Prints recall@k (normalized: hits in the top k / min(relevant, k)) and MRR, per query
with --verbose.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from etl_assets.core.embeddings.local_provider import LocalEmbedder  # noqa: E402
from etl_assets.core.evaluation import evaluate_retrieval
from etl_assets.core.sources.jira.sample import generate_sample_site, labelled_queries  # noqa: E402
from etl_assets.core.sources.jira.specs import ISSUES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    site = generate_sample_site()
    report = asyncio.run(evaluate_retrieval(ISSUES, site.issues, labelled_queries(site), LocalEmbedder(), k=args.k))
    figures = report.as_dict()
    print(json.dumps(figures, indent=2))
    if args.verbose:
        for o in report.outcomes:
            print(f"recall={o.recall(args.k):.2f} rr={o.reciprocal_rank:.2f}  {o.query}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(figures, fh, indent=2)


if __name__ == "__main__":
    main()
