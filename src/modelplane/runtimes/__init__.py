"""One small class per model format, all with the shape of ``Runtime``.

Runtimes are imported lazily by name so a worker process only pays for the
libraries its model needs (torch, transformers, skops are heavy).
"""

from __future__ import annotations

import importlib

from modelplane.errors import InvalidInput
from modelplane.runtimes.base import Arrays, Runtime, RuntimeOptions

RUNTIMES: dict[str, str] = {
    "onnx": "modelplane.runtimes.onnx:OnnxRuntime",
    "sklearn_onnx": "modelplane.runtimes.onnx:OnnxRuntime",
    "torchscript": "modelplane.runtimes.torchscript:TorchScriptRuntime",
    "torch_export": "modelplane.runtimes.torch_export:TorchExportRuntime",
    "skops": "modelplane.runtimes.skops:SkopsRuntime",
    "transformers": "modelplane.runtimes.transformers:TransformersRuntime",
    "pickle": "modelplane.runtimes.pickle:PickleRuntime",
}


def runtime_class(fmt: str) -> type[Runtime]:
    target = RUNTIMES.get(fmt)
    if target is None:
        raise InvalidInput(f"no runtime serves format {fmt!r} yet")
    module, _, name = target.partition(":")
    cls: type[Runtime] = getattr(importlib.import_module(module), name)
    return cls


__all__ = ["RUNTIMES", "Arrays", "Runtime", "RuntimeOptions", "runtime_class"]
