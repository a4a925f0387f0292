"""Whole-document retrieval on the sample site: queries only a comment or only the history answers.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/documents.py [--k 5] [--verbose]

Indexes the default sample site's issues and their comments (each in its own collection, as
the assets do) with the local model, ranks each issue by its best passage, and prints
recall@k and MRR for the comment-only, custom-field-only and history-only queries, next to
the topic queries as the baseline of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from etl_assets.core.embeddings.local_provider import LocalEmbedder  # noqa: E402
from etl_assets.core.evaluation import evaluate_documents  # noqa: E402
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
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    site = generate_sample_site()
    embedder = LocalEmbedder()
    sets = {
        "comment-only": document_queries(site),
        "history-only": history_queries(site),
        "custom-field-only": custom_field_queries(site),
        "topics (baseline)": labelled_queries(site),
    }
    for name, queries in sets.items():
        records = issues_with_field_names(site)  # as fetched for a tenant listing every custom field
        report = asyncio.run(evaluate_documents(ISSUES, records, queries, embedder, k=args.k))
        print(name, json.dumps(report.as_dict()))
        if args.verbose:
            for o in report.outcomes:
                print(f"  recall={o.recall(args.k):.2f} rr={o.reciprocal_rank:.2f}  {o.query}  -> {o.ranked}")


if __name__ == "__main__":
    main()
