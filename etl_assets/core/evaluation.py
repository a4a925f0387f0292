"""Retrieval quality on the sample site: recall@k, MRR@10 and nDCG@10 per search mode and query kind.

Used by ``benchmarks/retrieval.py`` (prints the figures, re-derives the "no good match"
thresholds) and by tests that hold floors, so a change that breaks retrieval fails CI. It
runs the real engine: the same parser, text, chunking, embedder, BM25 vectors and search as
the assets, into an in-memory Qdrant (qdrant-client local mode).

Query kinds (:func:`benchmark_queries`):

- ``natural``: the sample corpus's labelled queries (``data/queries.json``), relevant = the
  issues of the query's topic;
- ``exact-key``: an issue key, alone or in a sentence; relevant = that issue;
- ``exact-token``: class and method names, error strings, codes, config keys and versions
  taken from the corpus's log lines; relevant = every issue whose indexed text contains the
  token (so the labels follow the generated site, never a list of keys typed by hand);
- ``paraphrase`` and ``other-language``: :data:`PARAPHRASE_QUERIES`, worded unlike the issues
  or in another language than most of them; relevant = the issues of the topic.

A second set comes from real public Jira data (:func:`linked_issue_queries`): the issues of a
dump (the shared corpus's Appcelerator issues), and as queries the summaries of the issues they
are linked to — ``duplicate`` (linked as duplicates: the same problem, reported again in other
words) and ``related`` ("relates to": a weaker label); relevant = the issue that carries the link.

:data:`NONSENSE_QUERIES` have no relevant issue: with the calibrated thresholds they must
return nothing.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qdrant_client import AsyncQdrantClient, models

from etl_assets.core.edge_client import EdgeQdrantClient
from etl_assets.core.embeddings.base import Embedder
from etl_assets.core.records import EntitySpec
from etl_assets.core.search import FUSION, NO_THRESHOLDS, SearchMode, Thresholds, search
from etl_assets.core.vectorstore import Collection, collection_name
from etl_assets.core.vectorsync import sync_vectors

K_VALUES = (5, 10)

# English paraphrases and queries in another language than the issue's (a topic written only
# in English answers a German query only through the model's multilingual reach, if any).
PARAPHRASE_QUERIES: tuple[tuple[str, str, str], ...] = (
    ("cannot sign in if my passphrase has an umlaut", "login-unicode-password", "paraphrase"),
    ("identity provider response refused as too old", "sso-saml-expired", "paraphrase"),
    ("authenticator six digit number never works", "mfa-code-rejected", "paraphrase"),
    ("kicked out of the app in the middle of editing", "session-logout-random", "paraphrase"),
    ("exported spreadsheet is missing rows at the end", "csv-export-truncated", "paraphrase"),
    ("bill shows the wrong money sign", "pdf-invoice-currency", "paraphrase"),
    ("customer card charged two times for one order", "payment-webhook-duplicate", "paraphrase"),
    ("reimbursement never reaches the shopper", "refund-stuck-pending", "paraphrase"),
    ("dim letters on a black background are unreadable", "dark-mode-contrast", "paraphrase"),
    ("program dies as soon as it is opened on a new phone", "android-crash-startup", "paraphrase"),
    ("on-screen keyboard hides the text box on iPhone", "ios-keyboard-overlap", "paraphrase"),
    ("one wrong letter and the finder shows zero results", "search-typo-tolerance", "paraphrase"),
    ("pictures have no preview images", "image-thumbnails-missing", "paraphrase"),
    ("home overview page loads extremely slowly", "dashboard-slow", "paraphrase"),
    ("idle machines in the cluster are never removed", "autoscaling-scale-down", "paraphrase"),
    ("blind users hear nothing on buttons with only an icon", "screen-reader-buttons", "paraphrase"),
    ("right to be forgotten not honoured in old copies of the data", "gdpr-deletion-backups", "paraphrase"),
    ("chat workspace connection drops regularly", "slack-integration-disconnects", "paraphrase"),
    ("Anmeldung schlägt fehl, wenn das Passwort Umlaute enthält", "login-unicode-password", "other-language"),
    ("Zahlung wird doppelt abgebucht", "payment-webhook-duplicate", "other-language"),
    ("Benachrichtigungen auf dem Handy kommen verspätet an", "mobile-push-delayed", "other-language"),
    ("les e-mails de notification arrivent dans les spams", "email-notifications-spam", "other-language"),
    ("contraste insuffisant en mode sombre", "dark-mode-contrast", "other-language"),
    ("la exportación CSV corta los informes grandes", "csv-export-truncated", "other-language"),
    ("fechas de vencimiento un día antes para usuarios en América", "timezone-due-dates", "other-language"),
    ("検索インデックスが古い", "search-index-stale", "other-language"),
    ("ドイツ語の画面に翻訳されていない英語の文字列", "missing-translations", "other-language"),
    ("Die App stürzt beim Start auf Android ab", "android-crash-startup", "other-language"),
)

# Queries no issue answers: gibberish, keyboard mash, and everyday topics in several languages.
NONSENSE_QUERIES: tuple[str, ...] = (
    "qwzx vlorp grintak",
    "asdfghjkl zxcvbnm",
    "blorf snargle wimwam",
    "recipe for banana bread with walnuts",
    "who won the football world cup in 1998",
    "purple elephants dancing on the moon",
    "best hiking trails near the lake",
    "how to knit a wool scarf for winter",
    "wie backe ich einen Apfelkuchen",
    "la meilleure recette de crêpes bretonnes",
    "xyzzy plugh",
    "the quick brown fox jumps over the lazy dog",
)

# Log-line tokens worth looking up exactly: dotted or snake_case identifiers, CamelCase class
# names, codes mixing letters and digits, dotted numbers (versions, SMTP codes).
_EXACT_TOKEN = re.compile(
    r"[A-Za-z][\w]*(?:\.[A-Za-z_]\w*)+"  # auth.PasswordVerifier, java.lang.IllegalStateException
    r"|[a-z]+(?:_[a-z0-9]+)+"  # token_expired, address_changed
    r"|[A-Z][a-z]+(?:[A-Z][a-z0-9]+)+"  # AccessExclusiveLock, NotOnOrAfter
    r"|[A-Z0-9]*[A-Z][A-Z0-9]*\d[A-Z0-9]*"  # SPRING25, 00000001000004A2000000F3
    r"|\d+\.\d+\.\d+"  # 5.7.26
)


@dataclass(frozen=True)
class LabelledQuery:
    query: str
    relevant: tuple[str, ...]
    kind: str


@dataclass
class QueryOutcome:
    query: str
    relevant: list[str]
    ranked: list[str]
    kind: str = "natural"
    scores: list[float] = field(default_factory=list)

    def recall(self, k: int) -> float:
        # Normalized by what k results can hold: a query with 9 relevant issues scores 1.0 with 5 of them.
        hits = len(set(self.ranked[:k]) & set(self.relevant))
        return hits / min(len(self.relevant), k)

    @property
    def reciprocal_rank(self) -> float:
        return self.rr(len(self.ranked))

    def rr(self, k: int) -> float:
        for rank, key in enumerate(self.ranked[:k], start=1):
            if key in self.relevant:
                return 1.0 / rank
        return 0.0

    def ndcg(self, k: int) -> float:
        relevant = set(self.relevant)
        dcg = sum(1.0 / math.log2(i + 2) for i, key in enumerate(self.ranked[:k]) if key in relevant)
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
        return dcg / ideal if ideal else 0.0


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@dataclass
class RetrievalReport:
    model: str
    k: int
    outcomes: list[QueryOutcome]
    mode: str = SearchMode.HYBRID.value

    @property
    def recall_at_k(self) -> float:
        return _mean([o.recall(self.k) for o in self.outcomes])

    @property
    def mrr(self) -> float:
        return _mean([o.reciprocal_rank for o in self.outcomes])

    def figures(self, outcomes: Sequence[QueryOutcome] | None = None) -> dict[str, float]:
        chosen = self.outcomes if outcomes is None else outcomes
        return {
            "queries": len(chosen),
            "recall@5": round(_mean([o.recall(5) for o in chosen]), 4),
            "recall@10": round(_mean([o.recall(10) for o in chosen]), 4),
            "mrr@10": round(_mean([o.rr(10) for o in chosen]), 4),
            "ndcg@10": round(_mean([o.ndcg(10) for o in chosen]), 4),
        }

    def by_kind(self) -> dict[str, dict[str, float]]:
        kinds: dict[str, list[QueryOutcome]] = {}
        for o in self.outcomes:
            kinds.setdefault(o.kind, []).append(o)
        return {kind: self.figures(outs) for kind, outs in kinds.items()} | {"all": self.figures()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "mode": self.mode,
            "k": self.k,
            "queries": len(self.outcomes),
            f"recall@{self.k}": round(self.recall_at_k, 4),
            "mrr": round(self.mrr, 4),
        }


# -- the queries ---------------------------------------------------------------------------------


def exact_key_queries(keys: Sequence[str], count: int = 16) -> list[LabelledQuery]:
    """Every n-th issue key (deterministic), half alone, half inside a sentence."""
    step = max(1, len(keys) // count)
    out = []
    for i, key in enumerate(list(keys)[::step][:count]):
        text = key if i % 2 == 0 else f"what is the status of {key.lower() if i % 4 == 1 else key}?"
        out.append(LabelledQuery(text, (key,), "exact-key"))
    return out


def exact_token_queries(texts: dict[str, str], log_lines: Iterable[str], count: int = 24) -> list[LabelledQuery]:
    """Identifiers, codes and versions from ``log_lines``; relevant = the issues whose text contains them.

    Tokens found in no issue, or in more than a tenth of them (not specific), are skipped.
    """
    seen: set[str] = set()
    out = []
    limit = max(1, len(texts) // 10)
    for line in log_lines:
        for token in _EXACT_TOKEN.findall(line.replace("{n}", "")):
            token = token.strip(".")
            if token in seen or len(token) < 4:
                continue
            seen.add(token)
            relevant = tuple(sorted(k for k, text in texts.items() if token in text))
            if 0 < len(relevant) <= limit:
                out.append(LabelledQuery(token, relevant, "exact-token"))
    return out[:count]


def benchmark_queries(
    natural: Sequence[tuple[str, Sequence[str]]],
    texts: dict[str, str],
    topics: dict[str, str],
    log_lines: Iterable[str],
) -> list[LabelledQuery]:
    """All labelled queries of the benchmark (see the module docstring).

    ``texts``: issue key -> indexed text; ``topics``: issue key -> topic id.
    """
    by_topic: dict[str, list[str]] = {}
    for key, topic in topics.items():
        if key in texts:
            by_topic.setdefault(topic, []).append(key)
    out = [LabelledQuery(q, tuple(rel), "natural") for q, rel in natural]
    out += exact_key_queries(sorted(texts))
    out += exact_token_queries(texts, log_lines)
    for query, topic, kind in PARAPHRASE_QUERIES:
        if by_topic.get(topic):
            out.append(LabelledQuery(query, tuple(sorted(by_topic[topic])), kind))
    return out


# Link types of a Jira dump turned into query kinds by linked_issue_queries.
LINK_KINDS = {"Duplicate": "duplicate", "Relates": "related"}


def linked_issue_queries(issues: Iterable[dict[str, Any]], kinds: dict[str, str] = LINK_KINDS) -> list[LabelledQuery]:
    """Queries from the issue links of real Jira issues (REST ``issue`` objects, v2 or v3).

    For each link of a type in ``kinds`` to an issue outside ``issues``, the linked issue's
    summary (which the REST answer carries with the link) is a query whose relevant issue is the
    one holding the link: a user describing the linked problem should find it. Links between two
    issues of the set are left out (the other issue, whose own summary is the query, would rank
    first and is not the label), and so is a summary that is already a query of the same kind.
    """
    issues = list(issues)
    keys = {str(i.get("key")) for i in issues}
    relevant: dict[tuple[str, str], set[str]] = {}
    for issue in issues:
        for link in (issue.get("fields") or {}).get("issuelinks") or []:
            kind = kinds.get(str((link.get("type") or {}).get("name")))
            other = link.get("outwardIssue") or link.get("inwardIssue") or {}
            summary = str((other.get("fields") or {}).get("summary") or "").strip()
            if kind is None or not summary or other.get("key") in keys:
                continue
            relevant.setdefault((kind, summary), set()).add(str(issue["key"]))
    return [LabelledQuery(summary, tuple(sorted(found)), kind) for (kind, summary), found in relevant.items()]


# -- running them ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def indexed(
    spec: EntitySpec,
    records: Iterable[Any],
    embedder: Embedder,
    *,
    tenant_id: str = "eval",
    with_children: bool = False,
    engine: str = "local",
) -> AsyncIterator[AsyncQdrantClient]:
    """A Qdrant holding ``records`` (source objects of ``spec``) as the vector asset would write them;
    ``with_children``: also the child entities they carry (comments), each in its own collection
    (see :func:`document_rows`). ``engine``: "local" (qdrant-client local mode in memory) or
    "edge" (the embedded Qdrant Edge engine, in a temporary folder removed on exit)."""
    if with_children:
        rows = document_rows(spec, records, tenant_id)
    else:
        rows = {spec.name: [{**spec.parse(r), "id": n, "tenant_id": tenant_id} for n, r in enumerate(records, 1)]}
    specs = {spec.name: spec, **{link.spec.name: link.spec for link in spec.children}}
    folder = tempfile.mkdtemp(prefix="eval-edge-") if engine == "edge" else None
    client = EdgeQdrantClient(folder) if folder else AsyncQdrantClient(location=":memory:")
    try:
        for name, entity_rows in rows.items():
            collection = Collection(client, collection_name(tenant_id, name), tenant_id, name, local=True)
            live = {r["external_id"] for r in entity_rows}

            async def live_ids(candidates: list[str], live: set[str] = live) -> set[str]:
                return live & set(candidates)

            await sync_vectors(
                spec=specs[name],
                tenant_id=tenant_id,
                pages=lambda entity_rows=entity_rows: iter([entity_rows]),  # type: ignore[misc]
                live_ids=live_ids,
                embedder=embedder,
                collection=collection,
            )
        yield client
    finally:
        await client.close()
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


async def run_queries(
    client: AsyncQdrantClient,
    embedder: Embedder,
    queries: Sequence[LabelledQuery],
    *,
    mode: SearchMode,
    thresholds: Thresholds = NO_THRESHOLDS,
    fusion: models.Fusion = FUSION,
    k: int = 10,
    tenant_id: str = "eval",
) -> list[QueryOutcome]:
    outcomes = []
    for q in queries:
        # Retrieval quality is measured over the whole index: an operator's unrestricted search.
        hits = await search(
            client,
            embedder,
            q.query,
            tenant_id=tenant_id,
            access=None,
            k=k,
            mode=mode,
            thresholds=thresholds,
            fusion=fusion,
        )
        outcomes.append(QueryOutcome(q.query, list(q.relevant), [h.key for h in hits], q.kind, [h.score for h in hits]))
    return outcomes


async def evaluate_retrieval(
    spec: EntitySpec,
    records: Iterable[Any],
    queries: list[tuple[str, list[str]]],
    embedder: Embedder,
    *,
    k: int = 5,
    tenant_id: str = "eval",
    mode: SearchMode = SearchMode.DENSE,
) -> RetrievalReport:
    """Index ``records``, then rank each (query, relevant keys) in ``mode``, without thresholds."""
    labelled = [LabelledQuery(q, tuple(rel), "natural") for q, rel in queries]
    async with indexed(spec, records, embedder, tenant_id=tenant_id) as client:
        outcomes = await run_queries(client, embedder, labelled, mode=mode, k=max(k, 10), tenant_id=tenant_id)
    return RetrievalReport(embedder.model, k, outcomes, mode.value)


# -- "no good match" thresholds ---------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """One leg's threshold and the scores it was derived from."""

    mode: str
    threshold: float
    lowest_good: float  # least rank-1 score of a real query whose rank 1 is relevant
    highest_nonsense: float  # best score any nonsense query reached (0 when none returned a hit)
    real_queries_cut: int  # real queries whose relevant rank-1 hit the threshold removes

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "threshold": self.threshold,
            "lowest_good_rank1": round(self.lowest_good, 4),
            "highest_nonsense": round(self.highest_nonsense, 4),
            "real_queries_cut": self.real_queries_cut,
        }


def calibrate(mode: str, real: Sequence[QueryOutcome], nonsense: Sequence[QueryOutcome]) -> Calibration:
    """The least score a hit needs, from unthresholded outcomes of one leg (see ``search.DENSE_MIN_SCORE``).

    The midpoint between the best nonsense score and the least good rank-1 score when the two
    are apart; when they overlap, just above the best nonsense score (nonsense must return
    nothing; the real queries it cuts are counted).
    """
    good = [o.scores[0] for o in real if o.scores and o.ranked[0] in o.relevant]
    bad = [o.scores[0] for o in nonsense if o.scores]
    lowest_good = min(good) if good else 0.0
    highest_bad = max(bad) if bad else 0.0
    if highest_bad < lowest_good:
        threshold = (highest_bad + lowest_good) / 2
    else:
        threshold = highest_bad * 1.02 + 1e-3
    threshold = math.ceil(threshold * 1000) / 1000
    cut = sum(1 for s in good if s < threshold)
    return Calibration(mode, threshold, lowest_good, highest_bad, cut)


def document_rows(spec: EntitySpec, records: Iterable[Any], tenant_id: str) -> dict[str, list[dict[str, Any]]]:
    """Rows of ``spec`` and of its child entities from source records, as the table step makes them.

    Child records are those the parent record carries (the sample site's issues carry all their
    comments); child rows the index leaves out (restricted comments) are left out here too.
    """
    out: dict[str, list[dict[str, Any]]] = {spec.name: []}
    for link in spec.children:
        out[link.spec.name] = []
    for record in records:
        row = spec.parse(record)
        out[spec.name].append({**row, "id": len(out[spec.name]) + 1, "tenant_id": tenant_id})
        for link in spec.children:
            inherited = {**link.inherit(row), link.parent_column: row["external_id"]}
            for child in link.extract(record, []).records:
                child_row = {**link.spec.parse(child), **inherited, "tenant_id": tenant_id}
                if child_row.get("visibility"):
                    continue
                out[link.spec.name].append({**child_row, "id": len(out[link.spec.name]) + 1})
    return out


async def evaluate_documents(
    spec: EntitySpec,
    records: Iterable[Any],
    queries: list[tuple[str, list[str]]],
    embedder: Embedder,
    *,
    k: int = 5,
    tenant_id: str = "eval",
    mode: SearchMode = SearchMode.DENSE,
) -> RetrievalReport:
    """Like :func:`evaluate_retrieval`, with the child entities (comments) indexed in their own
    collections and an issue ranked by its best passage, its own or a child's (as search does)."""
    reports = await evaluate_document_sets(
        spec, records, {"queries": queries}, embedder, k=k, tenant_id=tenant_id, modes=(mode,)
    )
    return reports[mode.value]["queries"]


async def evaluate_document_sets(
    spec: EntitySpec,
    records: Iterable[Any],
    sets: Mapping[str, list[tuple[str, list[str]]]],
    embedder: Embedder,
    *,
    k: int = 5,
    tenant_id: str = "eval",
    modes: Sequence[SearchMode] = (SearchMode.DENSE,),
) -> dict[str, dict[str, RetrievalReport]]:
    """:func:`evaluate_documents` for several query sets and modes over one index: mode -> set -> report."""
    names = [spec.name, *(link.spec.name for link in spec.children)]
    out: dict[str, dict[str, RetrievalReport]] = {}
    async with indexed(spec, records, embedder, tenant_id=tenant_id, with_children=True) as client:
        for mode in modes:
            for label, queries in sets.items():
                outcomes = []
                for query, relevant in queries:
                    best: dict[str, float] = {}
                    for name in names:
                        for hit in await search(
                            client,
                            embedder,
                            query,
                            tenant_id=tenant_id,
                            access=None,
                            entity=name,
                            k=k * 4,
                            mode=mode,
                            thresholds=NO_THRESHOLDS,
                        ):
                            best[hit.key] = max(best.get(hit.key, -1.0), hit.score)
                    ranked = sorted(best, key=lambda key: best[key], reverse=True)[:k]
                    outcomes.append(QueryOutcome(query, relevant, ranked, label))
                out.setdefault(mode.value, {})[label] = RetrievalReport(embedder.model, k, outcomes, mode.value)
    return out
