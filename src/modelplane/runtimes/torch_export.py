"""``torch.export`` programs (``.pt2`` from ``torch.export.save``), run as ``.module()``.

An exported program records its inputs' names, dtypes and (symbolic) shapes, so
the signature comes from the program itself unless one was given at upload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelplane.runtimes.base import RuntimeOptions, single_file
from modelplane.runtimes.torch_common import TorchRuntime, dtype_name, set_threads
from modelplane.schemas.registry import Signature, TensorSpec


class TorchExportRuntime(TorchRuntime):
    format = "torch_export"

    @classmethod
    def load(cls, artifact_dir: Path, options: RuntimeOptions) -> TorchExportRuntime:
        import torch

        set_threads(options)
        program = torch.export.load(str(single_file(artifact_dir, (".pt2",))))
        module = program.module()
        sig = options.signature
        if sig is None or not sig.inputs:
            sig = _program_signature(program)
        return cls(module, sig)


def _program_signature(program: Any) -> Signature:
    user_inputs = list(program.graph_signature.user_inputs)
    vals = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    inputs = [_spec(name, vals.get(name)) for name in user_inputs]
    outputs = [
        _spec(f"output__{i}", None) for i in range(len(program.graph_signature.user_outputs))
    ]
    return Signature(inputs=inputs, outputs=outputs)


def _spec(name: str, val: Any) -> TensorSpec:
    if val is None or not hasattr(val, "shape"):
        return TensorSpec(name=name, dtype="unknown", shape=[])
    # Symbolic sizes (dynamic dimensions) are not plain ints.
    shape = [d if type(d) is int else -1 for d in val.shape]
    return TensorSpec(name=str(name), dtype=dtype_name(val.dtype), shape=shape)
