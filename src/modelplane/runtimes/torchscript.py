"""TorchScript archives (``torch.jit.save``) on CPU.

Inputs and outputs take their names from the signature recorded at upload when
there is one; otherwise inputs are named after the scripted ``forward``'s
arguments (dtype and shape unknown) and outputs are ``output__0``, ``output__1``…
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from modelplane.runtimes.base import RuntimeOptions, single_file
from modelplane.runtimes.torch_common import TorchRuntime, set_threads
from modelplane.schemas.registry import Signature, TensorSpec

SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".zip")


class TorchScriptRuntime(TorchRuntime):
    format = "torchscript"

    @classmethod
    def load(cls, artifact_dir: Path, options: RuntimeOptions) -> TorchScriptRuntime:
        import torch

        set_threads(options)
        path = str(single_file(artifact_dir, SUFFIXES))
        with warnings.catch_warnings():  # TorchScript is deprecated, still what users upload
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(path, map_location="cpu")  # type: ignore[no-untyped-call]
        module.eval()
        sig = options.signature
        if sig is None or not sig.inputs:
            sig = _scripted_signature(module)
        return cls(module, sig)


def _scripted_signature(module: Any) -> Signature:
    import torch

    schema = module.forward.schema
    inputs = [
        TensorSpec(name=a.name, dtype="unknown", shape=[])
        for a in schema.arguments[1:]  # the first is ``self``
    ]
    returns = schema.returns[0].type if schema.returns else None
    count = len(returns.elements()) if isinstance(returns, torch.TupleType) else 1
    outputs = [TensorSpec(name=f"output__{i}", dtype="unknown", shape=[]) for i in range(count)]
    return Signature(inputs=inputs, outputs=outputs)
