"""What the torch runtimes share: thread settings, numpy ⇄ tensor, naming outputs.

Imported only by runtime modules that already need torch.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from modelplane.errors import InvalidInput
from modelplane.runtimes.base import Arrays, Runtime, RuntimeOptions
from modelplane.schemas.registry import Signature, TensorSpec


def set_threads(options: RuntimeOptions) -> None:
    import torch

    torch.set_num_threads(max(1, options.intra_op_threads))
    # Only allowed before the first parallel op of the process; a worker hosts one model.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(max(1, options.inter_op_threads))


def dtype_name(dtype: Any) -> str:
    """numpy-style name of a torch dtype (``torch.float32`` -> ``float32``)."""
    name = str(dtype).removeprefix("torch.")
    try:
        np.dtype(name)
    except TypeError:
        return "unknown"
    return name


def to_tensor(arr: np.ndarray) -> Any:
    import torch

    if arr.dtype == object or arr.dtype.kind in "USO":
        raise InvalidInput("torch models take numeric tensors, not strings")
    # Arrays decoded from a frame are read-only views; torch wants writable memory.
    return torch.from_numpy(np.require(arr, requirements=["C", "W"]))


def to_numpy(value: Any) -> np.ndarray:
    import torch

    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return np.asarray(t.numpy())
    return np.asarray(value)


def name_outputs(result: Any, names: list[str]) -> Arrays:
    """Map a forward's result (tensor, tuple/list, or dict) to named arrays."""
    if isinstance(result, dict):
        if names and all(n in result for n in names):
            return {n: to_numpy(result[n]) for n in names}
        return {str(k): to_numpy(v) for k, v in result.items()}
    items = list(result) if isinstance(result, tuple | list) else [result]
    if len(names) != len(items):
        names = [f"output__{i}" for i in range(len(items))]
    return {n: to_numpy(v) for n, v in zip(names, items, strict=True)}


def known(specs: list[TensorSpec]) -> bool:
    """Whether every spec has a dtype and shape, so sample inputs can be built from it."""
    return bool(specs) and all(s.dtype != "unknown" and s.shape for s in specs)


class TorchRuntime(Runtime):
    """A torch module called positionally with inputs in signature order."""

    def __init__(self, module: Any, signature: Signature) -> None:
        self.module = module
        self._sig = signature
        self._inputs = [s.name for s in signature.inputs]
        self._outputs = [s.name for s in signature.outputs]

    def metadata(self) -> Signature:
        return self._sig

    def predict(self, inputs: Arrays) -> Arrays:
        import torch

        missing = [n for n in self._inputs if n not in inputs]
        if missing:
            raise InvalidInput(f"missing input(s) {missing}; the model takes {self._inputs}")
        with torch.inference_mode():
            result = self.module(*(to_tensor(inputs[n]) for n in self._inputs))
        return name_outputs(result, self._outputs)

    def warmup(self) -> None:
        # Without dtypes and shapes (no signature given at upload) there is nothing to feed.
        if known(self._sig.inputs):
            super().warmup()
