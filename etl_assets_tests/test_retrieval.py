"""Retrieval quality floor: the local model must find the labelled issues of the sample site."""

from __future__ import annotations

import asyncio

import pytest

from etl_assets.core.evaluation import evaluate_retrieval
from etl_assets.core.sources.jira.sample import generate_sample_site, labelled_queries
from etl_assets.core.sources.jira.specs import ISSUES


@pytest.mark.slow
def test_local_model_clears_the_retrieval_floor():
    from etl_assets.core.embeddings.local_provider import LocalEmbedder

    site = generate_sample_site()
    queries = labelled_queries(site)
    assert len(queries) >= 15
    report = asyncio.run(evaluate_retrieval(ISSUES, site.issues, queries, LocalEmbedder(), k=5))
    assert report.recall_at_k >= 0.8, report.as_dict()
    assert report.mrr >= 0.8, report.as_dict()
    # Several languages are among the queries; none may come back empty-handed.
    assert all(o.recall(5) > 0 for o in report.outcomes), [o.query for o in report.outcomes if o.recall(5) == 0]
