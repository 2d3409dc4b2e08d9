"""Export a Hugging Face / sentence-transformers folder to ``model.onnx`` + tokenizer files.

The result is a folder the ``transformers`` runtime serves with onnxruntime
(upload it with format ``transformers``)::

    from modelplane.runtimes.export import export_transformers_onnx
    export_transformers_onnx("all-MiniLM-L6-v2/", "minilm-onnx/")

or ``python -m modelplane.runtimes.export SRC DST [--task text-classification]``.
The ONNX graph outputs the encoder's ``last_hidden_state`` (embedding tasks;
pooling and normalisation stay in the runtime, configured by the copied
sentence-transformers files) or the classifier's ``logits``.
``export_model_onnx`` exports a model already in memory (e.g. a fine-tuned
encoder with its own head) whose ``forward`` takes the tokenizer's outputs as
keywords.
"""

from __future__ import annotations

import argparse
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".onnx")
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
CLASSIFICATION_TASKS = frozenset({"text-classification"})
SAMPLE = ["modelplane exports this model.", "A second, somewhat longer sentence for the trace."]


def _wrapper(model: Any, names: list[str]) -> Any:
    import torch

    class KeywordWrapper(torch.nn.Module):
        """Passes positional export inputs to the model as keywords (transformers 5 needs it)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> Any:
            out = self.model(**dict(zip(names, args, strict=True)))
            return out if isinstance(out, torch.Tensor) else out[0]

    return KeywordWrapper().eval()


def export_transformers_onnx(
    src: str | Path,
    dst: str | Path,
    *,
    task: str = "feature-extraction",
    opset: int = 17,
    atol: float = 1e-3,
) -> Path:
    """Write ``dst/model.onnx`` and copy ``src``'s tokenizer and config files; returns ``dst``.

    Checks the ONNX model against torch on a sample batch and raises ``RuntimeError``
    when they differ by more than ``atol``.
    """
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    src, dst = Path(src), Path(dst)
    loader = AutoModelForSequenceClassification if task in CLASSIFICATION_TASKS else AutoModel
    model = loader.from_pretrained(src, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(src, use_fast=True)
    output = "logits" if task in CLASSIFICATION_TASKS else "last_hidden_state"
    dst.mkdir(parents=True, exist_ok=True)
    _copy_support_files(src, dst)
    export_model_onnx(model, tokenizer, dst / "model.onnx", output=output, opset=opset, atol=atol)
    return dst


def export_model_onnx(
    model: Any,
    tokenizer: Any,
    path: Path,
    *,
    output: str = "logits",
    opset: int = 17,
    atol: float = 1e-3,
) -> float:
    """Write ``model`` (in eval mode; keyword inputs from ``tokenizer``) to ``path``.

    ``output`` names the graph's output: ``logits`` ([batch, labels]) or
    ``last_hidden_state`` ([batch, sequence, dim]). Returns the largest difference
    from torch on a sample batch; raises ``RuntimeError`` when it exceeds ``atol``.
    """
    import inspect

    import torch
    from torch.jit._trace import TracerWarning

    accepted = inspect.signature(model.forward).parameters
    encoded = tokenizer(SAMPLE, padding=True, return_tensors="pt")
    names = [n for n in MODEL_INPUTS if n in accepted and n in encoded]
    args = tuple(encoded[n] for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[output] = {0: "batch"} if output == "logits" else {0: "batch", 1: "sequence"}

    wrapper = _wrapper(model, names)
    with torch.inference_mode():
        expected = wrapper(*args).numpy()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated and chatty; the result is checked below.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", TracerWarning)
        warnings.filterwarnings("ignore", message=".*aten::index.*")
        torch.onnx.export(
            wrapper,
            args,
            str(path),
            input_names=names,
            output_names=[output],
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return _check(path, {n: a.numpy() for n, a in zip(names, args, strict=True)}, expected, atol)


def _copy_support_files(src: Path, dst: Path) -> None:
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if not path.is_file() or path.name.lower().endswith(WEIGHT_SUFFIXES):
            continue
        if any(part.startswith(".") for part in rel.parts) or rel.parts[0] == "onnx":
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dst / rel)


def _check(path: Path, feed: dict[str, np.ndarray], expected: np.ndarray, atol: float) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, feed)[0]
    diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else np.inf
    if diff > atol:
        raise RuntimeError(f"exported model differs from torch by {diff:.2e} (> {atol})")
    return diff


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("src", help="Hugging Face or sentence-transformers model folder")
    parser.add_argument("dst", help="folder to write model.onnx and tokenizer files to")
    parser.add_argument("--task", default="feature-extraction")
    parser.add_argument("--opset", type=int, default=17)
    ns = parser.parse_args(argv)
    print(export_transformers_onnx(ns.src, ns.dst, task=ns.task, opset=ns.opset))


if __name__ == "__main__":
    main()
