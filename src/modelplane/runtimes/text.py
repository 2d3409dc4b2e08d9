"""Text model plumbing without torch: the fast tokenizer, sentence-transformers config, pooling.

The tokenizer is the Rust ``tokenizers.Tokenizer`` behind every Hugging Face
"fast" tokenizer, read from ``tokenizer.json`` (or taken from
``AutoTokenizer(use_fast=True)`` when a folder has no such file). Each batch is
padded to its own longest sequence; ``tokenizer.json`` files often carry a fixed
padding length (128 for all-MiniLM-L6-v2), which is dropped here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelplane.errors import InvalidInput

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len")
POOLING_ALIASES = {"mean_sqrt_len_tokens": "mean_sqrt_len"}
LEGACY_KEYS = {  # in sentence-transformers' concatenation order
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}


def model_root(artifact_dir: Path) -> Path:
    """The folder holding ``config.json`` (archives may wrap the model in one folder)."""
    if (artifact_dir / "config.json").is_file():
        return artifact_dir
    found = sorted(artifact_dir.rglob("config.json"), key=lambda p: len(p.parts))
    if not found:
        raise InvalidInput("transformers artifact has no config.json")
    return found[0].parent


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text(encoding="utf-8"))
    return doc if isinstance(doc, dict) else {}


@dataclass(frozen=True)
class SentenceConfig:
    """How token vectors become one sentence vector (sentence-transformers' modules)."""

    max_length: int
    pooling: tuple[str, ...]
    normalize: bool


def sentence_config(root: Path, config: dict[str, Any]) -> SentenceConfig:
    """Read modules.json / 1_Pooling / sentence_bert_config.json; plain HF models get mean+L2."""
    st = read_json(root / "sentence_bert_config.json")
    tok = read_json(root / "tokenizer_config.json")
    limits = [int(st["max_seq_length"])] if st.get("max_seq_length") else []
    if isinstance(tok.get("model_max_length"), int) and tok["model_max_length"] < 1_000_000:
        limits.append(tok["model_max_length"])
    if not limits and isinstance(config.get("max_position_embeddings"), int):
        limits.append(config["max_position_embeddings"])
    max_length = limits[0] if limits else 512

    path = root / "modules.json"
    modules = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    if not isinstance(modules, list):
        return SentenceConfig(max_length, ("mean",), normalize=True)
    pooling: tuple[str, ...] = ("mean",)
    normalize = False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind == "Transformer":
            continue
        if kind == "Pooling":
            pooling = _pooling_modes(read_json(root / str(module.get("path", "")) / "config.json"))
        elif kind == "Normalize":
            normalize = True
        else:
            raise InvalidInput(f"sentence-transformers module {kind!r} is not supported")
    return SentenceConfig(max_length, pooling, normalize)


def _pooling_modes(doc: dict[str, Any]) -> tuple[str, ...]:
    """Both config styles: ``"pooling_mode": "mean" | [...]`` and legacy boolean keys."""
    given = doc.get("pooling_mode")
    if given is not None:
        names = [given] if isinstance(given, str) else list(given)
    else:
        names = [mode for key, mode in LEGACY_KEYS.items() if doc.get(key)]
        names += [
            k for k, v in doc.items() if k.startswith("pooling_mode") and v and k not in LEGACY_KEYS
        ]
    modes = tuple(POOLING_ALIASES.get(str(n), str(n)) for n in names)
    if not modes or any(m not in POOLING_MODES for m in modes):
        raise InvalidInput(f"pooling {list(modes)} is not supported (only {list(POOLING_MODES)})")
    return modes


def load_tokenizer(root: Path, max_length: int) -> Any:
    """The fast (Rust) tokenizer, truncating at ``max_length`` and padding to the longest."""
    if (root / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(root / "tokenizer.json"))
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(root, use_fast=True).backend_tokenizer
    pad = tok.padding or {}
    pad_token = pad.get("pad_token") or read_json(root / "special_tokens_map.json").get("pad_token")
    if isinstance(pad_token, dict):
        pad_token = pad_token.get("content")
    pad_token = pad_token or "[PAD]"
    pad_id = pad.get("pad_id", tok.token_to_id(pad_token) or 0)
    tok.enable_padding(
        direction=pad.get("direction", "right"),
        pad_id=pad_id,
        pad_type_id=pad.get("pad_type_id", 0),
        pad_token=pad_token,
    )
    tok.enable_truncation(max_length)
    return tok


def encode(tokenizer: Any, texts: list[str]) -> dict[str, np.ndarray]:
    encodings = tokenizer.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def pool(hidden: np.ndarray, mask: np.ndarray, cfg: SentenceConfig) -> np.ndarray:
    """Token vectors [batch, seq, dim] -> sentence vectors [batch, dim] (sentence-transformers)."""
    hidden = hidden.astype(np.float32, copy=False)
    if hidden.ndim == 2:  # the graph already pooled
        out = hidden
    else:
        m = mask[..., None].astype(np.float32)
        parts = []
        for mode in cfg.pooling:
            if mode == "cls":
                parts.append(hidden[:, 0])
            elif mode == "max":
                parts.append(np.where(m > 0, hidden, np.float32(-1e9)).max(axis=1))
            else:
                summed = (hidden * m).sum(axis=1)
                count = np.clip(m.sum(axis=1), 1e-9, None)
                parts.append(summed / (np.sqrt(count) if mode == "mean_sqrt_len" else count))
        out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    if cfg.normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(out, dtype=np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float32)
