"""Whole-document retrieval on the sample site: queries only a comment, a custom field or the history answers.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/documents.py [--k 5] [--mode dense --mode hybrid] [--verbose]

Indexes the default sample site's issues (as fetched for a tenant listing every custom field) and
their comments (each in its own collection, as the assets do) once with the local model, ranks
each issue by its best passage (its own or a comment's), and prints recall@k and MRR per search
mode (default: dense, sparse and hybrid) for the comment-only, custom-field-only and history-only
queries, next to the topic queries as the baseline of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from etl_assets.core.embeddings.local_provider import LocalEmbedder  # noqa: E402
from etl_assets.core.evaluation import evaluate_document_sets  # noqa: E402
from etl_assets.core.search import SearchMode  # noqa: E402
from etl_assets.core.sources.jira.sample import generate_sample_site, labelled_queries  # noqa: E402
from etl_assets.core.sources.jira.sample.documents import (  # noqa: E402
    custom_field_queries,
    document_queries,
    history_queries,
    issues_with_field_names,
)
from etl_assets.core.sources.jira.specs import ISSUES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--mode", action="append", choices=[m.value for m in SearchMode], help="repeatable")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    modes = [SearchMode(m) for m in args.mode or [m.value for m in SearchMode]]
    site = generate_sample_site()
    embedder = LocalEmbedder()
    sets = {
        "comment-only": document_queries(site),
        "history-only": history_queries(site),
        "custom-field-only": custom_field_queries(site),
        "topics (baseline)": labelled_queries(site),
    }
    started = time.perf_counter()
    records = issues_with_field_names(site)  # as fetched for a tenant listing every custom field
    reports = asyncio.run(evaluate_document_sets(ISSUES, records, sets, embedder, k=args.k, modes=modes))
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for mode, by_set in reports.items():
        for name, report in by_set.items():
            row = report.as_dict()
            figures.setdefault(name, {})[mode] = {"recall": row[f"recall@{args.k}"], "mrr": row["mrr"]}
            if args.verbose:
                print(f"{mode:7s} {name}")
                for o in report.outcomes:
                    print(f"  recall={o.recall(args.k):.2f} rr={o.reciprocal_rank:.2f}  {o.query}  -> {o.ranked}")
    print(f"recall@{args.k} / MRR ({embedder.model}, {time.perf_counter() - started:.0f} s)")
    print(f"{'queries':20s}" + "".join(f"{m.value:>16s}" for m in modes))
    for name, by_mode in figures.items():
        cells = "".join(f"{by_mode[m.value]['recall']:>9.2f} / {by_mode[m.value]['mrr']:.2f}" for m in modes)
        print(f"{name:20s}{cells}   ({len(sets[name])} queries)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"model": embedder.model, "k": args.k, "figures": figures}, fh, indent=2)


if __name__ == "__main__":
    main()
