"""A causal LM's examples: texts or chat conversations, split, tokenised, labelled.

``read_corpus`` takes a table's ``text`` column (or ``data.text_field``) or its
chat ``messages`` column (lists of ``{role, content}``), checks every row and
splits the rows into training and validation by the seed. ``encode`` turns one
example into token ids and labels: text is tokenised as a server tokenises a
prompt, a conversation is rendered with the tokenizer's chat template (which
carries its own special tokens), and every example ends with ``<|endoftext|>``
(or the tokenizer's eos where it has no such token). With
``data.assistant_only_loss`` only the replies (with their end marker) are
labelled; other positions get ``IGNORE``. Texts longer than the context become
several context-sized pieces; conversations are truncated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelplane.training.spec import DataSpec, Hyper, ModelSpec
from modelplane.training.tokenizer import (
    END_OF_TEXT,
    check_messages,
    ensure_chat,
    render_chat,
    train_bpe,
)

IGNORE = -100  # label of positions that carry no loss


@dataclass
class Corpus:
    """The dataset's examples as text (chat rendered lazily, once a tokenizer exists)."""

    chat: bool
    train: list[Any]  # str, or a list of {role, content} messages
    val: list[Any]


def read_corpus(data: DataSpec, hyper: Hyper, table: Any) -> Corpus:
    """The ``text`` / ``data.text_field`` or ``messages`` column of ``table``, split by seed."""
    columns = [str(c) for c in table.columns]
    field = data.text_field or ("messages" if "messages" in columns else "text")
    if field not in columns:
        raise ValueError(f"data: the dataset has no {field!r} column (text or messages)")
    chat = data.text_field is None and field == "messages"
    values = list(table[field])
    rows: list[Any] = []
    for i, v in enumerate(values):
        if chat:
            # Parquet lists arrive as numpy arrays of dicts; JSONL ones as lists.
            rows.append(check_messages(v.tolist() if isinstance(v, np.ndarray) else v, i))
        elif isinstance(v, str) and v:
            rows.append(v)
        else:
            raise ValueError(f"data: row {i}: {field!r} must be a non-empty string")
    if len(rows) < 2:
        raise ValueError("data: at least 2 rows are needed (training and validation)")
    if data.assistant_only_loss and not chat:
        raise ValueError("data.assistant_only_loss needs chat 'messages' rows")
    order = np.random.default_rng(hyper.seed).permutation(len(rows))
    n_val = min(len(rows) - 1, max(1, round(len(rows) * data.validation_split)))
    return Corpus(chat, [rows[i] for i in order[n_val:]], [rows[i] for i in order[:n_val]])


def _as_text(tokenizer: Any, example: Any, chat: bool) -> tuple[str, list[tuple[int, int]]]:
    return render_chat(tokenizer, example) if chat else (example, [])


Piece = tuple[list[int], list[int]]  # token ids, and labels (the ids, or IGNORE)


def encode(
    tokenizer: Any, example: Any, chat: bool, max_len: int, assistant_only: bool
) -> list[Piece]:
    """Token ids and labels (ids, or IGNORE where no loss applies) of one example.

    A text longer than ``max_len`` tokens is cut into consecutive ``max_len`` pieces, so
    every token is trained on; a conversation is truncated (a piece cut out of its middle
    would lack the turns that it answers).
    """
    text, spans = _as_text(tokenizer, example, chat)
    # Chat templates carry their own special tokens; plain text is tokenised as a prompt is.
    enc = tokenizer(text, add_special_tokens=not chat, return_offsets_mapping=assistant_only)
    ids = [*enc["input_ids"], end_id(tokenizer)]
    labels = list(ids)
    if assistant_only:
        offsets = list(enc["offset_mapping"])
        for k, (start, _) in enumerate(offsets):
            if not any(a <= start < b for a, b in spans):
                labels[k] = IGNORE
        labels[-1] = IGNORE  # the document end follows the last reply's own end marker
    if chat:
        return [(ids[:max_len], labels[:max_len])]
    return [(ids[i : i + max_len], labels[i : i + max_len]) for i in range(0, len(ids), max_len)]


def end_id(tokenizer: Any) -> int:
    """The token closing every example: ``<|endoftext|>`` where the vocabulary has it, else eos."""
    found = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    if isinstance(found, int) and found != tokenizer.unk_token_id:
        return found
    return int(tokenizer.eos_token_id)


def build_tokenizer(corpus: Corpus, model: ModelSpec, base: Path | None) -> Any:
    """The base's tokenizer (given a chat template if chat data needs one), or a new BPE."""
    if base is None:
        texts = corpus.train
        if corpus.chat:
            probe = train_bpe([], 300, chat=True)  # renders with the template; not trained yet
            texts = [_as_text(probe, ex, True)[0] for ex in corpus.train]
        return train_bpe(texts, model.vocab_size, chat=corpus.chat)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base, use_fast=True)
    if corpus.chat:
        ensure_chat(tokenizer)
    if tokenizer.eos_token is None:  # nothing marks an end yet: add GPT-2's marker
        tokenizer.add_special_tokens({"eos_token": END_OF_TEXT})
    if tokenizer.pad_token is None:  # padded positions carry no loss: any token will do
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
