"""Retrieval quality per search mode on the sample site, and the "no good match" thresholds.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/retrieval.py [--json out.json] [--verbose] \
        [--engine local|edge] [--sets sample,linked] [--model minilm|multilingual]

Indexes the sample site's issues with the local model (all-MiniLM-L6-v2) and BM25, as the
vector asset does, then runs every labelled query of ``etl_assets.core.evaluation`` (natural,
exact-key, exact-token, paraphrase, other-language) in each mode — dense, sparse, hybrid with
RRF fusion and hybrid with DBSF fusion — without thresholds, and prints recall@5, recall@10,
MRR@10 and nDCG@10 per mode and query kind.

Then it re-derives the thresholds (``evaluation.calibrate``: per leg, from the rank-1 scores of
the real queries and the best scores of the nonsense queries) and prints them next to the
ones in ``etl_assets.core.search`` (``DENSE_MIN_SCORE``, ``SPARSE_MIN_RARE_TERMS``), and checks,
with the thresholds in the code, that every nonsense query returns nothing and how many
real queries still find a relevant issue in their top 10.

The second set (``linked``) is real public Jira data: the shared corpus's 200 Appcelerator
issues (``appcelerator-v2-issues/``, read where it lies, never copied), queried with the
summaries of the issues they are linked to as duplicates (and, a weaker label, "relates to"):
see ``evaluation.linked_issue_queries``. It reports the same figures per mode, without and with
the thresholds in the code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from qdrant_client import models  # noqa: E402

from etl_assets.core.embeddings.base import Embedder  # noqa: E402
from etl_assets.core.embeddings.local_provider import LocalEmbedder  # noqa: E402
from etl_assets.core.embeddings.multilingual_provider import MultilingualEmbedder  # noqa: E402
from etl_assets.core.evaluation import (  # noqa: E402
    NONSENSE_QUERIES,
    LabelledQuery,
    RetrievalReport,
    benchmark_queries,
    calibrate,
    indexed,
    linked_issue_queries,
    run_queries,
)
from etl_assets.core.search import DENSE_MIN_SCORE, SPARSE_MIN_RARE_TERMS, SearchMode, Thresholds, rare_idf  # noqa: E402
from etl_assets.core.sources.jira.sample import corpus, generate_sample_site, labelled_queries  # noqa: E402
from etl_assets.core.sources.jira.specs import ISSUES  # noqa: E402

RUNS = (
    ("dense", SearchMode.DENSE, models.Fusion.RRF),
    ("sparse", SearchMode.SPARSE, models.Fusion.RRF),
    ("hybrid-rrf", SearchMode.HYBRID, models.Fusion.RRF),
    ("hybrid-dbsf", SearchMode.HYBRID, models.Fusion.DBSF),
)


ROOT = Path(__file__).resolve().parents[1]
LINKED_SET = "appcelerator-v2-issues"


def corpus_dir() -> Path:
    """The shared Jira corpus: JIRA_CORPUS_DIR, else ``shared/jira-corpus`` beside the checkout."""
    override = os.environ.get("JIRA_CORPUS_DIR")
    return Path(override) if override else ROOT.parent / "shared" / "jira-corpus"


def linked_benchmark(folder: Path | None = None) -> tuple[list[Any], list[LabelledQuery]]:
    """The corpus's Appcelerator issues and the queries their duplicate / relates links give
    (etl_assets_tests/test_retrieval.py builds the same)."""
    folder = folder or corpus_dir() / LINKED_SET
    issues = [json.loads(f.read_text(encoding="utf-8")) for f in sorted(folder.glob("*.json"))]
    issues = [i for i in issues if isinstance(i, dict) and i.get("key") and i.get("fields")]
    return issues, linked_issue_queries(issues)


def sample_benchmark() -> tuple[list[Any], list[LabelledQuery]]:
    """The sample site's issues and the benchmark's queries over them (etl_assets_tests/test_retrieval.py
    builds the same)."""
    site = generate_sample_site()
    texts = {str(row["key"]): ISSUES.text(row) for row in (ISSUES.parse(i) for i in site.issues)}
    logs = [line for topic in corpus.topics() for line in topic.logs]
    return list(site.issues), benchmark_queries(labelled_queries(site), texts, dict(site.topics), logs)


async def measure_linked(embedder: Embedder, verbose: bool, engine: str) -> dict[str, Any]:
    """The linked-issue set: figures per mode and kind, raw and with the thresholds in the code."""
    records, queries = linked_benchmark()
    out: dict[str, Any] = {"issues": len(records), "engine": engine, "queries": {}}
    for q in queries:
        out["queries"][q.kind] = out["queries"].get(q.kind, 0) + 1
    started = time.perf_counter()
    async with indexed(ISSUES, records, embedder, engine=engine) as client:
        out["index_s"] = round(time.perf_counter() - started, 1)
        points = (await client.count(f"client_eval_{ISSUES.name}", exact=True)).count
        out["points"] = points
        served = Thresholds.calibrated(embedder.model, points)
        for label, thresholds in (("raw", Thresholds(None, None)), ("with_thresholds", served)):
            figures: dict[str, Any] = {}
            for run, mode, fusion in RUNS:
                outcomes = await run_queries(client, embedder, queries, mode=mode, fusion=fusion, thresholds=thresholds)
                figures[run] = RetrievalReport(embedder.model, 10, outcomes, run).by_kind()
                figures[run]["empty"] = sum(1 for o in outcomes if not o.ranked)
                if verbose:
                    for o in outcomes:
                        print(f"linked {label:15} {run:11} {o.kind:9} rr={o.rr(10):.2f}  {o.query[:70]}")
            out[label] = figures
    return out


async def measure(
    verbose: bool, engine: str = "local", sets: tuple[str, ...] = ("sample", "linked"), model: str = "minilm"
) -> dict[str, Any]:
    embedder: Embedder = MultilingualEmbedder() if model == "multilingual" else LocalEmbedder()
    out: dict[str, Any] = {"model": embedder.model, "engine": engine}
    if "sample" in sets:
        out.update(await measure_sample(embedder, verbose, engine))
    if "linked" in sets:
        out["linked"] = await measure_linked(embedder, verbose, engine)
    return out


async def measure_sample(embedder: Embedder, verbose: bool, engine: str) -> dict[str, Any]:
    records, queries = sample_benchmark()
    nonsense = [LabelledQuery(q, (), "nonsense") for q in NONSENSE_QUERIES]
    out: dict[str, Any] = {"model": embedder.model, "issues": len(records), "queries": {}}
    for q in queries:
        out["queries"][q.kind] = out["queries"].get(q.kind, 0) + 1
    started = time.perf_counter()
    async with indexed(ISSUES, records, embedder, engine=engine) as client:
        out["index_s"] = round(time.perf_counter() - started, 1)
        modes: dict[str, Any] = {}
        raw: dict[str, Any] = {}
        for label, mode, fusion in RUNS:
            outcomes = await run_queries(client, embedder, queries, mode=mode, fusion=fusion)
            report = RetrievalReport(embedder.model, 10, outcomes, label)
            modes[label] = report.by_kind()
            raw[label] = outcomes
            if verbose:
                for o in outcomes:
                    print(f"{label:11} {o.kind:14} rr={o.rr(10):.2f} ndcg={o.ndcg(10):.2f}  {o.query[:70]}")
        out["modes"] = modes
        calibration = {}
        for label, mode in (("dense", SearchMode.DENSE), ("sparse", SearchMode.SPARSE)):
            junk = await run_queries(client, embedder, nonsense, mode=mode)
            calibration[label] = calibrate(label, raw[label], junk).as_dict()
        points = (await client.count(f"client_eval_{ISSUES.name}", exact=True)).count
        scale = rare_idf(points)
        calibration["sparse"]["points"] = points
        calibration["sparse"]["rare_idf"] = round(scale, 4)
        calibration["sparse"]["threshold_in_rare_terms"] = round(calibration["sparse"]["threshold"] / scale, 2)
        out["calibration"] = calibration
        in_code = Thresholds(DENSE_MIN_SCORE.get(embedder.model), SPARSE_MIN_RARE_TERMS * scale)
        out["thresholds_in_code"] = {
            "dense": in_code.dense,
            "sparse_rare_terms": SPARSE_MIN_RARE_TERMS,
            "sparse_here": round(in_code.sparse or 0.0, 3),
        }
        checked: dict[str, Any] = {}
        for label, mode, fusion in RUNS:
            junk = await run_queries(client, embedder, nonsense, mode=mode, thresholds=in_code, fusion=fusion)
            real = await run_queries(client, embedder, queries, mode=mode, thresholds=in_code, fusion=fusion)
            checked[label] = {
                "nonsense_with_hits": [o.query for o in junk if o.ranked],
                "real_queries_finding_a_relevant_issue": sum(1 for o in real if o.rr(10) > 0),
                "real_queries_empty": sum(1 for o in real if not o.ranked),
                "real_queries": len(real),
                "figures_with_thresholds": RetrievalReport(embedder.model, 10, real, label).by_kind(),
            }
        out["with_thresholds"] = checked
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--verbose", action="store_true", help="one line per query and mode")
    parser.add_argument(
        "--engine", choices=["local", "edge"], default="local", help="the store the sets are indexed in"
    )
    parser.add_argument(
        "--model",
        choices=["minilm", "multilingual"],
        default="minilm",
        help="the local model: all-MiniLM-L6-v2 (the default) or USE multilingual v3 (EMBEDDING_MODEL="
        "universal-sentence-encoder-multilingual-3)",
    )
    parser.add_argument("--sets", default="sample,linked", help="sample (the generated site), linked (real Jira data)")
    args = parser.parse_args()
    sets = tuple(s.strip() for s in args.sets.split(","))
    figures = asyncio.run(measure(args.verbose, args.engine, sets, args.model))
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(figures, fh, indent=2, ensure_ascii=False)


if __name__ == "__main__":
    main()
