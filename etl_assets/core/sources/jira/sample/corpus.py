"""The multilingual text corpus the sample site writes its issues from.

The texts live as JSON under ``data/`` (read with :mod:`importlib.resources`, so they are
found in a wheel install as well as in a checkout) and are loaded once into typed,
immutable objects:

* ``topics.json``: ~34 topics (login problems, CSV exports, duplicate payments, ...),
  each with labels, paraphrased summaries and description sentences in English and
  some of German, French, Spanish and Japanese, and optional log lines;
* ``queries.json``: natural-language queries, each labelled with one topic, worded
  unlike the summaries (retrieval-quality tests use them);
* ``phrases.json``: topic-independent filler (support-portal sentences per language,
  section headings, reproduction steps, investigation notes).

The order of everything in these files is part of the generated site: the generator
draws from them with a seeded random generator, so reordering a list changes the site.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, NamedTuple

__all__ = ["Headings", "Phrases", "Topic", "TopicTexts", "phrases", "query_topics", "topics"]


class TopicTexts(NamedTuple):
    """One language's texts of a topic."""

    summaries: tuple[str, ...]
    sentences: tuple[str, ...]  # description sentences, shuffled and combined per issue


class Headings(NamedTuple):
    """Section headings of a description in one language."""

    details: str
    environment: str
    log: str


@dataclass(frozen=True)
class Topic:
    """What a group of issues is about; never written into an issue's fields."""

    id: str
    labels: tuple[str, ...]
    texts: dict[str, TopicTexts]  # language -> texts; always has "en"
    logs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Phrases:
    """Topic-independent text the generator mixes into descriptions."""

    generic: dict[str, tuple[str, ...]]  # language -> sentence templates ({customer}, {version}, ...)
    headings: dict[str, Headings]  # language -> headings
    steps_to_reproduce: tuple[str, ...]  # English only
    investigation: tuple[str, ...]  # English only, templates for long descriptions


def _load(name: str) -> Any:
    data = resources.files(__package__).joinpath("data", name).read_text(encoding="utf-8")
    return json.loads(data)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"sample corpus: {where} must be a non-empty list of non-empty strings")
    return tuple(value)


@cache
def topics() -> tuple[Topic, ...]:
    """The topics of ``data/topics.json``, in file order."""
    out: list[Topic] = []
    for raw in _load("topics.json"):
        topic_id = raw["id"]
        texts = {
            lang: TopicTexts(
                _strings(t["summaries"], f"{topic_id}/{lang}/summaries"),
                _strings(t["sentences"], f"{topic_id}/{lang}/sentences"),
            )
            for lang, t in raw["texts"].items()
        }
        if "en" not in texts:
            raise ValueError(f"sample corpus: topic {topic_id!r} has no English texts")
        logs = _strings(raw["logs"], f"{topic_id}/logs") if "logs" in raw else ()
        out.append(Topic(topic_id, _strings(raw["labels"], f"{topic_id}/labels"), texts, logs))
    if len({t.id for t in out}) != len(out):
        raise ValueError("sample corpus: topic ids must be unique")
    return tuple(out)


@cache
def query_topics() -> tuple[tuple[str, str], ...]:
    """(query, topic id) pairs of ``data/queries.json``, in file order."""
    known = {t.id for t in topics()}
    out = tuple((q["query"], q["topic"]) for q in _load("queries.json"))
    unknown = sorted({topic for _, topic in out} - known)
    if unknown:
        raise ValueError(f"sample corpus: queries refer to unknown topics {unknown}")
    return out


@cache
def phrases() -> Phrases:
    """The filler text of ``data/phrases.json``."""
    raw = _load("phrases.json")
    return Phrases(
        generic={lang: _strings(v, f"generic/{lang}") for lang, v in raw["generic"].items()},
        headings={lang: Headings(**v) for lang, v in raw["headings"].items()},
        steps_to_reproduce=_strings(raw["steps_to_reproduce"], "steps_to_reproduce"),
        investigation=_strings(raw["investigation"], "investigation"),
    )
