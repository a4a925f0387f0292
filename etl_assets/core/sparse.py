"""BM25 sparse vectors for Jira text: our pre-tokenisation, Qdrant Edge's BM25 encoder.

Every point carries a sparse ``bm25`` vector beside its dense one. The collection's sparse
vector uses Qdrant's IDF modifier, so the document side holds only the term-frequency part
of BM25 and the IDF comes from the tenant's own collection at query time.

Why not the encoder alone: ``qdrant_edge.Bm25`` with its default ``Word`` tokenizer splits on
every non-alphanumeric character, so ``ABC-123`` becomes ``abc`` + ``123`` (which match every
issue of project ABC and everything numbered 123), ``IndexWriter.flush`` loses the pairing of
class and method, and ``9.4.2`` becomes three single digits. What Jira users type most is
exactly such tokens. So :func:`terms` (ours) decides the terms: each whitespace-separated
token, trimmed of surrounding punctuation, is kept **whole** (``abc-123``,
``indexwriter.flush``, ``nullpointerexception``, ``snake_case_name``, ``9.4.2``,
``err_conn_refused``) and also **split into its parts** (``abc`` ``123``; ``indexwriter``
``index`` ``writer`` ``flush``; ``null`` ``pointer`` ``exception``; ``9.4`` for a version's
prefix), so a query for the whole token ranks the exact issue first and a query for a part
still finds it. Runs of CJK characters (no spaces to split on) become overlapping bigrams.

Why the encoder then: the terms are handed, space-joined, to ``qdrant_edge.Bm25`` with the
``Whitespace`` tokenizer, which keeps our terms as they are and contributes what we would
otherwise write by hand: lowercasing, English stopwords and stemming (``runs``/``running``
-> ``run``), the term hashing into sparse indices, and the BM25 term-frequency weights
(``k``, ``b``, ``avg_len``) of a document. The hashing is the same for documents and queries
and does not depend on the corpus, so no vocabulary is stored, and both the embedded engine
and a Qdrant server take the resulting vectors as they are.
"""

from __future__ import annotations

import re
import threading
from functools import cache

import qdrant_edge
from qdrant_client import models

# Name of the sparse vector in a collection, and of the dense one beside it.
SPARSE_VECTOR = "bm25"
DENSE_VECTOR = "dense"
# Recorded with the collection's schema: a change to terms() or to the encoder settings
# must bump it (stored sparse vectors would no longer match the query side's terms).
SPARSE_VERSION = "jira-terms-1+edge-bm25-whitespace"

# Longest token considered: a base64 blob or a minified line is not a term anyone types.
MAX_TOKEN_CHARS = 80
# Surrounding punctuation stripped from a whitespace-separated token ("(ABC-123)," -> "ABC-123").
_EDGE = "\"'`()[]{}<>,;:!?*|«»“”‘’„…。、，：；！？（）「」"
_TRIM = ".-_/=#~^+"
# Whitespace, and what joins a setting to its value (max_pool_size=10, key:value, a,b).
_SEPARATORS = re.compile(r"[\s=,;]+|:(?=\s|$)")
_PART_SPLIT = re.compile(r"[^0-9A-Za-z\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff]+")
# camelCase / PascalCase humps, acronyms kept together: HTTPServerError -> HTTP, Server, Error.
_HUMPS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z\u00df-\u00ff]+|[A-Z]+|[0-9]+|[^\W\d_]+")
_VERSION = re.compile(r"^v?\d+(?:\.\d+){1,4}$", re.IGNORECASE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")


def _cjk_terms(run: str) -> list[str]:
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)]


def _word_terms(token: str) -> list[str]:
    """Terms of one whitespace-separated token: the token whole, then its parts."""
    token = token.strip(_EDGE + _TRIM)
    if not token or len(token) > MAX_TOKEN_CHARS:
        return []
    out: list[str] = []
    cjk = _CJK.findall(token)
    if cjk:
        for run in cjk:
            out += _cjk_terms(run)
        token = _CJK.sub(" ", token)
        return out + [t for piece in token.split() for t in _word_terms(piece)]
    parts = [p for p in _PART_SPLIT.split(token) if p]
    if not parts:
        return []  # only punctuation
    whole = token.lower()
    if _VERSION.match(token):
        # A version's parts are its prefixes (9, 9.4 of 9.4.2): a lone "4" or "2" matches anything.
        pieces = whole.lstrip("v").split(".")
        return [whole] + [".".join(pieces[:n]) for n in range(1, len(pieces)) if ".".join(pieces[:n]) != whole]
    humps = [h for p in parts for h in _HUMPS.findall(p)]
    compound = len(parts) > 1 or len(humps) > 1
    out.append(whole)
    if not compound:
        return out
    for piece in [*parts, *humps]:
        low = piece.lower()
        # A lone letter (the x of 0x1F, the e of E1234) is noise, not a term.
        if low not in out and not (len(low) == 1 and not low.isdigit()):
            out.append(low)
    return out


def terms(text: str) -> list[str]:
    """The BM25 terms of ``text``: every token whole and split into parts (see the module docstring)."""
    out: list[str] = []
    for token in _SEPARATORS.split(text):
        if token:
            out += _word_terms(token)
    return out


# qdrant_edge.Bm25 is a native object; one per thread keeps it off any shared-state question.
_local = threading.local()


@cache
def _config() -> qdrant_edge.Bm25Config:
    return qdrant_edge.Bm25Config(tokenizer=qdrant_edge.TokenizerType.Whitespace)


def _encoder() -> qdrant_edge.Bm25:
    enc = getattr(_local, "bm25", None)
    if enc is None:
        enc = _local.bm25 = qdrant_edge.Bm25(_config())
    return enc


def _sparse(vector: qdrant_edge.SparseVector) -> models.SparseVector:
    return models.SparseVector(indices=list(vector.indices), values=[float(v) for v in vector.values])


def document_vector(text: str) -> models.SparseVector:
    """The sparse vector of an indexed chunk (term frequencies, BM25-saturated)."""
    return _sparse(_encoder().embed_document(" ".join(terms(text))))


def query_vector(text: str) -> models.SparseVector:
    """The sparse vector of a query (each distinct term weight 1; IDF is applied by the collection)."""
    return _sparse(_encoder().embed_query(" ".join(terms(text))))


def sparse_vector_params() -> models.SparseVectorParams:
    """The collection's sparse vector: IDF computed by Qdrant from the collection's own points."""
    return models.SparseVectorParams(modifier=models.Modifier.IDF)
