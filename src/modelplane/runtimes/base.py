"""The runtime shape every format follows: load, signature, predict on a batch, warm up.

Runtimes are pure work: no HTTP, no database, no knowledge of deployments. They
run inside worker processes, never in the gateway.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelplane.errors import InvalidInput
from modelplane.schemas.registry import Signature, TensorSpec

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class RuntimeOptions:
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    task: str = ""
    spin: bool = False  # let intra-op threads busy-wait between runs
    trusted: bool = False  # an admin marked the model trusted (pickle-based formats)
    signature: Signature | None = None  # what the registry recorded, when known
    extra: dict[str, Any] = field(default_factory=dict)


class Runtime(abc.ABC):
    format: str = ""

    @classmethod
    @abc.abstractmethod
    def load(cls, artifact_dir: Path, options: RuntimeOptions) -> Runtime:
        """Load the model from an unpacked artifact folder."""

    @abc.abstractmethod
    def metadata(self) -> Signature:
        """Input and output names, dtypes and shapes (-1 = dynamic)."""

    @abc.abstractmethod
    def predict(self, inputs: Arrays) -> Arrays:
        """Run one batch; the leading dimension of every input is the batch."""

    def warmup(self) -> None:
        """Run a tiny batch so the first real request does not pay for lazy init."""
        self.predict(sample_inputs(self.metadata().inputs))


def sample_inputs(specs: list[TensorSpec], rows: int = 1) -> Arrays:
    out: Arrays = {}
    for spec in specs:
        shape = [rows if i == 0 and d < 0 else max(d, 1) for i, d in enumerate(spec.shape)]
        if spec.dtype == "string":
            out[spec.name] = np.full(shape, "warm up", dtype=object)
        else:
            out[spec.name] = np.zeros(shape, dtype=np.dtype(spec.dtype))
    return out


def single_file(artifact_dir: Path, suffixes: tuple[str, ...]) -> Path:
    """The one model file in an artifact folder (by suffix, else the only file)."""
    files = sorted(p for p in artifact_dir.rglob("*") if p.is_file())
    matches = [p for p in files if p.name.lower().endswith(suffixes)]
    if len(matches) == 1:
        return matches[0]
    if not matches and len(files) == 1:
        return files[0]
    if not files:
        raise InvalidInput("artifact folder is empty")
    named = [p for p in matches if p.stem == "model"]
    if len(named) == 1:
        return named[0]
    raise InvalidInput(f"cannot tell which file is the model among {[p.name for p in files][:10]}")
