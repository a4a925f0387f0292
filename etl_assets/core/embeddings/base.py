"""What every embedding provider offers, and the counters an operator wants to see."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol


class EmbeddingError(RuntimeError):
    """The provider's answer cannot be used (wrong count, wrong dimension, refused input)."""


class InputTooLargeError(EmbeddingError):
    """An input the provider refuses as too large even alone.

    Raised for an input of a single token (nothing smaller to try), or, by callers that
    cannot re-chunk (``embed_counted``), for any input refused alone. ``index`` is its
    position among the texts given, so that the caller can name the record it came from.
    """

    def __init__(self, message: str, index: int = 0) -> None:
        super().__init__(message)
        self.index = index


class ModelMismatchError(RuntimeError):
    """A collection was built with another model or dimension than the one configured."""


@dataclass
class EmbeddingStats:
    requests: int = 0  # embedding calls that succeeded
    inputs: int = 0
    tokens: int = 0
    http_requests: int = 0  # including retried attempts
    retries: int = 0  # attempts after the first, for any reason
    rate_limited: int = 0  # 429 answers
    transient_errors: int = 0  # 5xx, timeouts, resets, unreadable bodies (each retried)
    waited_s: float = 0.0  # time requests waited before being sent: rate budget, 429 pauses, backoff
    splits: int = 0  # refusals as too large: a request split in halves, or an input handed back to be re-chunked
    refused_inputs: int = 0  # inputs refused as too large even alone, handed back to be re-chunked smaller
    fallback_requests: int = 0  # requests answered by the fallback endpoint
    fallback_switches: int = 0  # times the primary failed and requests moved to the fallback
    primary_recoveries: int = 0  # times the primary answered again and requests moved back

    def since(self, before: EmbeddingStats) -> EmbeddingStats:
        """What happened after ``before`` was copied (one resource can serve several steps)."""
        return EmbeddingStats(**{k: v - getattr(before, k) for k, v in asdict(self).items()})

    def copy(self) -> EmbeddingStats:
        return EmbeddingStats(**asdict(self))

    def metadata(self) -> dict[str, float | int]:
        return {f"embedding_{k}": (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


class Embedder(Protocol):
    model: str
    dimensions: int
    max_batch_inputs: int
    max_batch_tokens: int
    stats: EmbeddingStats

    # A read-only member, so that a provider may derive it from its model (a property) or set it.
    @property
    def max_input_tokens(self) -> int:
        """The model's own input limit, in tokens."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def split(self, text: str, max_tokens: int) -> list[str]:
        """Split ``text`` into pieces of at most ``max_tokens`` tokens, in order."""
        ...

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


async def embed_or_refuse(
    embedder: Embedder, texts: Sequence[str], token_counts: Sequence[int]
) -> tuple[Sequence[Any], list[int]]:
    """Vectors for ``texts``, and the positions of the inputs the provider refused as too large.

    A provider that can refuse an input as too large even alone (a gateway, a small context
    window) offers ``embed_or_refuse``: it hands such inputs back (their rows hold no vector)
    after lowering its ``max_input_tokens`` below their size, so that the caller re-chunks
    the record they came from smaller. An input of one token it cannot hand back: it raises
    :class:`InputTooLargeError`. Other providers refuse nothing.
    """
    method = getattr(embedder, "embed_or_refuse", None)
    if method is not None:
        vectors, refused = await method(texts, token_counts)
        return vectors, list(refused)
    return await embed_counted(embedder, texts, token_counts), []


async def embed_counted(embedder: Embedder, texts: Sequence[str], token_counts: Sequence[int]) -> Sequence[Any]:
    """Vectors for ``texts``, handing over token counts to providers that can use them.

    A provider may offer ``embed_counted(texts, token_counts)`` (returning an array, one row
    per text) to size its rate budget without tokenizing again; others get ``embed``.
    """
    method = getattr(embedder, "embed_counted", None)
    if method is not None:
        return await method(texts, token_counts)
    return await embedder.embed(list(texts))


def split_counted(embedder: Embedder, text: str, max_tokens: int) -> list[tuple[str, int]]:
    """``text`` in pieces of at most ``max_tokens`` tokens, with the count of each piece."""
    method = getattr(embedder, "split_counted", None)
    if method is not None:
        return method(text, max_tokens)
    return [(piece, embedder.count_tokens(piece)) for piece in embedder.split(text, max_tokens)]


# A chunk ends at a line end when one lies in its last fifth: Markdown-like text (issue and comment
# bodies) keeps a table row, a list item or a code line whole; a cut is only moved back, never past
# the token limit, and text without line breaks is cut as before.
LINE_BOUNDARY_SHARE = 0.2


def cut_points(count: int, max_tokens: int, ends_line: Callable[[int], bool]) -> list[int]:
    """Where to cut ``count`` tokens into pieces of at most ``max_tokens``: each cut moves back to
    just after a token that ends a line (``ends_line(i)``) when one is in the window's last fifth."""
    cuts: list[int] = []
    start = 0
    max_tokens = max(1, max_tokens)
    while start < count:
        end = min(start + max_tokens, count)
        if end < count:
            floor = start + max(1, int(max_tokens * (1 - LINE_BOUNDARY_SHARE)))
            for j in range(end, floor, -1):
                if ends_line(j - 1):
                    end = j
                    break
        cuts.append(end)
        start = end
    return cuts


def check_vectors(vectors: Sequence[Any], expected_count: int, dimensions: int, model: str) -> None:
    """Refuse an answer that does not fit, before anything is written."""
    if len(vectors) != expected_count:
        raise EmbeddingError(f"model {model}: asked for {expected_count} embeddings, got {len(vectors)}")
    for i, vector in enumerate(vectors):
        if len(vector) != dimensions:
            raise EmbeddingError(f"model {model}: embedding {i} has {len(vector)} dimensions, expected {dimensions}")
