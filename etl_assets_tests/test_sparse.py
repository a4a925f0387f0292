"""BM25 terms: the tokens Jira users type survive whole and in parts, and rank the right issue."""

from __future__ import annotations

import asyncio

import pytest
from qdrant_client import AsyncQdrantClient, models

from etl_assets.core.sparse import SPARSE_VECTOR, document_vector, query_vector, sparse_vector_params, terms


@pytest.mark.parametrize(
    ("text", "whole", "parts"),
    [
        # issue keys, also inside punctuation
        ("see ABC-123.", "abc-123", ["abc", "123"]),
        ("(PROJ-7),", "proj-7", ["proj", "7"]),
        # dotted identifiers, class and method
        ("IndexWriter.flush() failed", "indexwriter.flush", ["indexwriter", "flush", "index", "writer"]),
        ("java.lang.IllegalStateException:", "java.lang.illegalstateexception", ["illegal", "state", "exception"]),
        # camel case
        ("NullPointerException", "nullpointerexception", ["null", "pointer", "exception"]),
        ("HTTPServerError", "httpservererror", ["http", "server", "error"]),
        # snake case and config keys
        ("max_pool_size=10", "max_pool_size", ["max", "pool", "size", "10"]),
        ("ERR_CONN_REFUSED", "err_conn_refused", ["err", "conn", "refused"]),
        # versions: whole, and their prefixes
        ("upgrade to 9.4.2", "9.4.2", ["9.4", "9"]),
        ("v2.17.0", "v2.17.0", ["2.17", "2"]),
        # error codes
        ("E1234", "e1234", ["1234"]),
        ("0x80070005", "0x80070005", ["80070005"]),
        ("SMTP 5.7.26", "5.7.26", ["5.7"]),
    ],
)
def test_jira_tokens_are_kept_whole_and_split_into_parts(text, whole, parts):
    got = terms(text)
    assert whole in got, got
    assert all(p in got for p in parts), got


def test_plain_words_are_not_split_and_lone_letters_are_dropped():
    assert terms("Login fails") == ["login", "fails"]
    assert "x" not in terms("0x1F") and "e" not in terms("E1234")


def test_only_punctuation_has_no_terms_and_an_empty_query_vector():
    assert terms("!!! ??? ... -- //") == []
    assert query_vector("!!! ??? ...").indices == []


def test_cjk_text_becomes_bigrams():
    assert terms("ログイン失敗") == ["ログ", "グイ", "イン", "ン失", "失敗"]


def test_query_and_document_vectors_share_the_term_indices():
    doc, query = document_vector("crash in IndexWriter.flush on 9.4.2"), query_vector("IndexWriter.flush")
    assert set(query.indices) <= set(doc.indices)
    assert all(v == 1.0 for v in query.values)
    # stemming and lowercasing come from the encoder: "Crashes" finds "crash"
    assert set(query_vector("Crashes").indices) <= set(doc.indices)


def test_a_key_query_ranks_the_issue_with_that_key_above_its_neighbours():
    """With IDF from the collection, the whole key outweighs the project's prefix and the number."""
    docs = {
        1: "ABC-123: search times out on large projects with many filters set",
        # shorter, and holding both parts of the key: ahead of issue 1 if the key were only split
        2: "ABC-124: 123 filters",
        3: "ABC-12: search shows stale results",
        4: "XYZ-123: search page layout broken",
    }

    async def go():
        client = AsyncQdrantClient(location=":memory:")
        try:
            await client.create_collection(
                "c", vectors_config={}, sparse_vectors_config={SPARSE_VECTOR: sparse_vector_params()}
            )
            await client.upsert(
                "c",
                points=[models.PointStruct(id=i, vector={SPARSE_VECTOR: document_vector(t)}) for i, t in docs.items()],
            )
            ranked = {}
            for query in ("ABC-123", "abc-123", "IndexWriter", "9.4"):
                response = await client.query_points("c", query=query_vector(query), using=SPARSE_VECTOR, limit=4)
                ranked[query] = [p.id for p in response.points]
            return ranked
        finally:
            await client.close()

    ranked = asyncio.run(go())
    assert ranked["ABC-123"][0] == 1 and ranked["abc-123"][0] == 1
    assert ranked["IndexWriter"] == []  # no document has the term: no hit, not the least bad one
