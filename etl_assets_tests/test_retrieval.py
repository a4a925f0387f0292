"""Retrieval quality floors with the local model (all-MiniLM-L6-v2) on the sample site.

One index of the sample's 300 issues (dense + BM25, as the vector asset writes them) serves
every test here; the queries are those of ``benchmarks/retrieval.py`` (see
``etl_assets.core.evaluation``). Floors held:

- the local model finds the labelled issues (the floor this file always held);
- hybrid search, as served (calibrated thresholds), is at least as good as dense search as
  served, on every query kind (nDCG@10 and MRR@10);
- a query that is an issue key returns that issue at rank 1, in every mode;
- nonsense queries return nothing, in every mode;
- the thresholds in ``etl_assets.core.search`` are what the calibration derives from these
  queries today (a change to the model, the corpus or the BM25 terms that moves them fails
  here, and the benchmark prints the new values).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from etl_assets.core.evaluation import (
    NONSENSE_QUERIES,
    LabelledQuery,
    RetrievalReport,
    benchmark_queries,
    calibrate,
    indexed,
    run_queries,
)
from etl_assets.core.search import DENSE_MIN_SCORE, SPARSE_MIN_RARE_TERMS, SearchMode, Thresholds, rare_idf
from etl_assets.core.sources.jira.sample import corpus, generate_sample_site, labelled_queries
from etl_assets.core.sources.jira.specs import ISSUES

pytestmark = pytest.mark.slow


def sample_benchmark() -> tuple[list[Any], list[LabelledQuery]]:
    """The same queries as benchmarks/retrieval.py."""
    site = generate_sample_site()
    texts = {str(row["key"]): ISSUES.text(row) for row in (ISSUES.parse(i) for i in site.issues)}
    logs = [line for topic in corpus.topics() for line in topic.logs]
    return list(site.issues), benchmark_queries(labelled_queries(site), texts, dict(site.topics), logs)


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Any]:
    from etl_assets.core.embeddings.local_provider import LocalEmbedder

    embedder = LocalEmbedder()
    records, queries = sample_benchmark()
    nonsense = [LabelledQuery(q, (), "nonsense") for q in NONSENSE_QUERIES]

    # The sample's own labelled queries, ranked in dense mode without thresholds (as
    # evaluate_retrieval ranks them), on the same index.
    floor = [LabelledQuery(q, tuple(rel), "natural") for q, rel in labelled_queries(generate_sample_site())]

    async def go() -> dict[str, Any]:
        out: dict[str, Any] = {"queries": queries, "floor-queries": floor}
        async with indexed(ISSUES, records, embedder) as client:
            out["floor"] = await run_queries(client, embedder, floor, mode=SearchMode.DENSE)
            points = (await client.count("client_eval_issues", exact=True)).count
            served = Thresholds.calibrated(embedder.model, points)
            out["points"] = points
            for mode in SearchMode:
                out[("raw", mode)] = await run_queries(client, embedder, queries, mode=mode)
                out[("served", mode)] = await run_queries(client, embedder, queries, mode=mode, thresholds=served)
                out[("nonsense", mode)] = await run_queries(client, embedder, nonsense, mode=mode, thresholds=served)
                out[("nonsense-raw", mode)] = await run_queries(client, embedder, nonsense, mode=mode)
        return out

    return asyncio.run(go())


def test_the_benchmark_has_the_query_kinds_the_issue_asks_for(outcomes):
    kinds = [q.kind for q in outcomes["queries"]]
    assert kinds.count("exact-key") + kinds.count("exact-token") >= 30
    assert kinds.count("paraphrase") + kinds.count("other-language") >= 20
    assert kinds.count("natural") >= 15


def test_local_model_clears_the_retrieval_floor(outcomes):
    assert len(outcomes["floor-queries"]) >= 15
    from etl_assets.core.embeddings.local_provider import LOCAL_MODEL_NAME

    report = RetrievalReport(LOCAL_MODEL_NAME, 5, outcomes["floor"], SearchMode.DENSE.value)
    assert report.recall_at_k >= 0.8, report.as_dict()
    assert report.mrr >= 0.8, report.as_dict()
    # Several languages are among the queries; none may come back empty-handed.
    assert all(o.recall(5) > 0 for o in report.outcomes), [o.query for o in report.outcomes if o.recall(5) == 0]


def test_hybrid_is_at_least_as_good_as_dense_on_every_query_kind(outcomes):
    hybrid = RetrievalReport("m", 10, outcomes[("served", SearchMode.HYBRID)]).by_kind()
    dense = RetrievalReport("m", 10, outcomes[("served", SearchMode.DENSE)]).by_kind()
    for kind, figures in dense.items():
        for metric in ("ndcg@10", "mrr@10"):
            assert hybrid[kind][metric] >= figures[metric], (kind, metric, hybrid[kind], figures)


def test_exact_keys_come_first_in_every_mode(outcomes):
    for source in ("raw", "served"):
        for mode in SearchMode:
            keyed = [o for o in outcomes[(source, mode)] if o.kind == "exact-key"]
            assert len(keyed) >= 10
            assert all(o.ranked[:1] == o.relevant for o in keyed), (
                source,
                mode,
                [(o.query, o.ranked[:3]) for o in keyed if o.ranked[:1] != o.relevant],
            )


def test_nonsense_returns_nothing_in_every_mode(outcomes):
    for mode in SearchMode:
        assert [o.query for o in outcomes[("nonsense", mode)] if o.ranked] == [], mode
    # ... which the thresholds do: without them the dense leg answers every query with something
    assert all(o.ranked for o in outcomes[("nonsense-raw", SearchMode.DENSE)])


def test_the_thresholds_in_the_code_are_what_the_labelled_queries_derive(outcomes):
    from etl_assets.core.embeddings.local_provider import LOCAL_MODEL_NAME

    dense = calibrate(
        "dense", outcomes[("raw", SearchMode.DENSE)], outcomes[("nonsense-raw", SearchMode.DENSE)]
    ).threshold
    sparse = calibrate(
        "sparse", outcomes[("raw", SearchMode.SPARSE)], outcomes[("nonsense-raw", SearchMode.SPARSE)]
    ).threshold
    assert DENSE_MIN_SCORE[LOCAL_MODEL_NAME] == pytest.approx(dense, abs=0.002)
    assert SPARSE_MIN_RARE_TERMS == pytest.approx(sparse / rare_idf(outcomes["points"]), abs=0.01)


def test_queries_only_a_comment_a_custom_field_or_the_history_answers_find_their_issues():
    """The sample's comment-only, custom-field-only and history-only queries (benchmarks/documents.py),
    recall@5 in dense and hybrid mode over issues and comments, on one index. Comments: the floor
    0.8 they always held. Custom fields and history: reached when the history digest and rich-text
    custom fields became chunks of their own: custom fields 1.00 in both modes, history 0.80 (it
    was 0.33 and 0.20 dense, 0.67 and 0.60 hybrid, while they shared a chunk with the description);
    the floors leave one miss of margin."""
    from etl_assets.core.embeddings.local_provider import LocalEmbedder
    from etl_assets.core.evaluation import evaluate_document_sets
    from etl_assets.core.sources.jira.sample.documents import (
        custom_field_queries,
        document_queries,
        history_queries,
        issues_with_field_names,
    )

    site = generate_sample_site()
    sets = {
        "comment-only": document_queries(site),
        "custom-field-only": custom_field_queries(site),
        "history-only": history_queries(site),
    }
    assert len(sets["comment-only"]) >= 8 and len(sets["custom-field-only"]) >= 3 and sets["history-only"]
    # The comments' facts are in no issue's own text: only the comments can answer.
    for fact, keys in site.comment_facts.items():
        for key in keys:
            assert fact[:40] not in ISSUES.text(ISSUES.parse(site.issue(key)))
    # The answers are in no other part of their issues' text: only the field or the history says them.
    for fact, keys in site.custom_facts.items():
        for key in keys:
            assert fact not in ISSUES.text(ISSUES.parse(site.issue(key)))  # without the field configured
    reports = asyncio.run(
        evaluate_document_sets(
            ISSUES,
            issues_with_field_names(site),
            sets,
            LocalEmbedder(),
            k=5,
            modes=(SearchMode.DENSE, SearchMode.HYBRID),
        )
    )
    floors = {"comment-only": 0.8, "custom-field-only": 0.66, "history-only": 0.6}
    for mode, by_set in reports.items():
        for name, report in by_set.items():
            assert report.recall_at_k >= floors[name], (mode, name, report.as_dict())
