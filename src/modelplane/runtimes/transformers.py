"""Hugging Face text models: sentence embeddings and sequence classification.

(Task ``text-generation``, or no task and a causal-LM architecture, loads
``modelplane.runtimes.generation.GenerationRuntime`` instead.)

The model's task picks what it serves:

- ``feature-extraction`` / ``sentence-embedding`` / ``embedding``: input ``text``
  (string [-1]); outputs ``embedding`` (float32 [-1, dim]: pooled as the
  folder's sentence-transformers config says, mean + L2 normalisation for a
  plain HF model) and ``tokens`` (int64 [-1]: tokens the model read per row,
  special tokens included, after truncation; used for usage metering).
- ``text-classification``: input ``text``; outputs ``label`` (string [-1], from
  ``id2label``) and ``probabilities`` (float32 [-1, labels], softmax).

A folder with ``model.onnx`` (see ``modelplane.runtimes.export``) runs on
onnxruntime without importing torch or transformers; otherwise the safetensors
weights run on torch. Either way the fast (Rust) tokenizer pads each batch to
its own longest sequence.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np

from modelplane.errors import InvalidInput
from modelplane.runtimes.base import Arrays, Runtime, RuntimeOptions
from modelplane.runtimes.text import (
    SentenceConfig,
    encode,
    load_tokenizer,
    model_root,
    pool,
    read_json,
    sentence_config,
    softmax,
)
from modelplane.schemas.registry import Signature, TensorSpec

EMBEDDING_TASKS = frozenset({"feature-extraction", "sentence-embedding", "embedding"})
CLASSIFICATION_TASKS = frozenset({"text-classification"})
INPUT = "text"


class OnnxBackend:
    def __init__(self, path: Path, options: RuntimeOptions) -> None:
        from modelplane.runtimes.onnx import session

        self.session = session(path, options)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.output = self.session.get_outputs()[0].name

    def __call__(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        ids = feed["input_ids"]
        args = {n: feed.get(n, np.zeros_like(ids)) for n in self.inputs}
        return np.asarray(self.session.run([self.output], args)[0])


class TorchBackend:
    def __init__(self, root: Path, options: RuntimeOptions, classify: bool) -> None:
        from transformers import AutoModel, AutoModelForSequenceClassification

        from modelplane.runtimes.torch_common import set_threads

        set_threads(options)
        loader = AutoModelForSequenceClassification if classify else AutoModel
        self.model = loader.from_pretrained(root).eval()
        self.accepted = set(inspect.signature(self.model.forward).parameters)

    def __call__(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        args = {n: torch.from_numpy(a) for n, a in feed.items() if n in self.accepted}
        with torch.inference_mode():
            out = self.model(**args)[0]
        return np.asarray(out.float().numpy())


def _find_onnx(root: Path) -> Path | None:
    for path in (root / "model.onnx", root / "onnx" / "model.onnx"):
        if path.is_file():
            return path
    return None


def is_generation(task: str, config: dict[str, Any]) -> bool:
    """Text generation: the task says so, or (no task) the architecture is a causal LM."""
    if task:
        return task in ("text-generation", "causal-lm")
    archs = [str(a) for a in config.get("architectures") or []]
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)


def _task(task: str, config: dict[str, Any], root: Path) -> str:
    if task in EMBEDDING_TASKS:
        return "embedding"
    if task in CLASSIFICATION_TASKS:
        return "classification"
    if not task:  # the model has no task set: guess from the folder
        archs = config.get("architectures") or []
        if any(str(a).endswith("ForSequenceClassification") for a in archs):
            return "classification"
        if (root / "modules.json").is_file():
            return "embedding"
    tasks = sorted(EMBEDDING_TASKS | CLASSIFICATION_TASKS | {"text-generation"})
    raise InvalidInput(f"the transformers runtime serves tasks {tasks}, not {task!r}")


def _texts(arr: np.ndarray) -> list[str]:
    if arr.ndim != 1:
        raise InvalidInput(f"input {INPUT!r} must be a 1-D list of strings, got shape {arr.shape}")
    out = []
    for item in arr.tolist():
        if isinstance(item, bytes):
            out.append(item.decode("utf-8", "replace"))
        elif isinstance(item, str):
            out.append(item)
        else:
            raise InvalidInput(f"input {INPUT!r} must hold strings, got {type(item).__name__}")
    return out


class TransformersRuntime(Runtime):
    format = "transformers"

    def __init__(
        self,
        task: str,
        tokenizer: Any,
        backend: OnnxBackend | TorchBackend,
        sentence: SentenceConfig,
        labels: list[str],
        dim: int,
    ) -> None:
        self.task = task
        self.tokenizer = tokenizer
        self.backend = backend
        self.sentence = sentence
        self.labels = labels
        self.dim = dim

    @classmethod
    def load(cls, artifact_dir: Path, options: RuntimeOptions) -> Runtime:
        root = model_root(artifact_dir)
        config = read_json(root / "config.json")
        if is_generation(options.task, config):  # causal LMs: runtimes/generation.py
            from modelplane.runtimes.generation import GenerationRuntime

            return GenerationRuntime.load(artifact_dir, options)
        task = _task(options.task, config, root)
        sentence = sentence_config(root, config)
        tokenizer = load_tokenizer(root, sentence.max_length)
        onnx_path = _find_onnx(root)
        backend: OnnxBackend | TorchBackend = (
            OnnxBackend(onnx_path, options)
            if onnx_path is not None
            else TorchBackend(root, options, task == "classification")
        )
        id2label = config.get("id2label") or {}
        labels = [str(id2label[k]) for k in sorted(id2label, key=int)] if id2label else []
        hidden = config.get("hidden_size") or config.get("d_model") or config.get("dim") or -1
        dim = int(hidden) * len(sentence.pooling) if int(hidden) > 0 else -1
        return cls(task, tokenizer, backend, sentence, labels, dim)

    def metadata(self) -> Signature:
        text = [TensorSpec(name=INPUT, dtype="string", shape=[-1])]
        if self.task == "embedding":
            outputs = [
                TensorSpec(name="embedding", dtype="float32", shape=[-1, self.dim]),
                TensorSpec(name="tokens", dtype="int64", shape=[-1]),
            ]
        else:
            outputs = [
                TensorSpec(name="label", dtype="string", shape=[-1]),
                TensorSpec(
                    name="probabilities", dtype="float32", shape=[-1, len(self.labels) or -1]
                ),
            ]
        return Signature(inputs=text, outputs=outputs)

    def predict(self, inputs: Arrays) -> Arrays:
        arr = inputs.get(INPUT)
        if arr is None:
            raise InvalidInput(f"missing input {INPUT!r}")
        texts = _texts(arr)
        if not texts:
            return self._empty()
        feed = encode(self.tokenizer, texts)
        out = self.backend(feed)
        mask = feed["attention_mask"]
        if self.task == "embedding":
            return {"embedding": pool(out, mask, self.sentence), "tokens": mask.sum(axis=1)}
        probs = softmax(out)
        best = probs.argmax(axis=1)
        names = self.labels or [f"LABEL_{i}" for i in range(probs.shape[1])]
        label = np.array([names[i] for i in best], dtype=object)
        return {"label": label, "probabilities": probs}

    def _empty(self) -> Arrays:
        if self.task == "embedding":
            return {
                "embedding": np.zeros((0, max(self.dim, 0)), np.float32),
                "tokens": np.zeros(0, np.int64),
            }
        return {
            "label": np.zeros(0, dtype=object),
            "probabilities": np.zeros((0, len(self.labels)), np.float32),
        }
