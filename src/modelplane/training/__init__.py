"""Training: specs, data preparation, the loop, data-parallel and federated runs, export.

Pure work (no HTTP, no database, no job queue). Importing this package loads
only pydantic and numpy, so the gateway can validate specs at submit time;
the torch modules are imported where they are used:

- ``spec``        ``TrainSpec`` (``ModelSpec``, ``Hyper``, ``DataSpec``, ``Federated``)
- ``data``        ``prepare``, ``prepare_federated``, ``check_columns``, ``PreparedData``,
                  ``Encoding``
- ``text``        ``tokenize`` (the built-in tokenizer, for training and inference)
- ``loop``        ``train(spec, data, callbacks, resume)`` -> ``TrainResult``; ``Callbacks``
- ``distributed`` ``run_ddp`` (gloo, N processes), ``run_training`` (1 or N by ``spec.workers``)
- ``federated``   ``federated_train`` (FedAvg)
- ``export``      ``export_onnx``, ``save_checkpoint``, ``load_checkpoint``
- ``models``, ``optim``, ``metrics``: the building blocks
"""

from __future__ import annotations

from modelplane.training.data import (
    Encoding,
    PreparedData,
    check_columns,
    prepare,
    prepare_federated,
)
from modelplane.training.spec import DataSpec, Federated, Hyper, ModelSpec, TrainSpec
from modelplane.training.text import tokenize

__all__ = [
    "DataSpec",
    "Encoding",
    "Federated",
    "Hyper",
    "ModelSpec",
    "PreparedData",
    "TrainSpec",
    "check_columns",
    "prepare",
    "prepare_federated",
    "tokenize",
]
