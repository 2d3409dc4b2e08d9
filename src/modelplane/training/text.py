"""The built-in text tokenizer: lower-cased ``\\w+`` words, a vocabulary from the training texts.

Inference uses the same function with the vocabulary stored in the result
(``Encoding.vocab``, and the exported signature's ``tokenizer``)::

    ids = tokenize(["what a great film"], vocab, max_len)  # int64 [1, max_len]
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

TOKEN = re.compile(r"\w+")
PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1


def words(text: object) -> list[str]:
    return TOKEN.findall(str(text).lower())


def count_words(texts: Iterable[object]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(words(text))
    return counts


def build_vocab(counts: Counter[str], size: int) -> list[str]:
    """``<pad>``, ``<unk>``, then the ``size - 2`` most frequent words (ties alphabetical)."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [PAD, UNK] + [w for w, _ in ranked[: size - 2]]


def tokenize(texts: Sequence[object], vocab: Sequence[str], max_len: int) -> np.ndarray:
    """Token ids [N, max_len]: unknown words -> 1, truncated, padded with 0."""
    index = {tok: i for i, tok in enumerate(vocab)}
    ids = np.zeros((len(texts), max_len), dtype=np.int64)
    for row, text in enumerate(texts):
        toks = [index.get(t, 1) for t in words(text)[:max_len]]
        ids[row, : len(toks)] = toks
    return ids
