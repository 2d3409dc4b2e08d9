"""Spec validation: every bad value is refused when the job is submitted, naming its field."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from modelplane.training import TrainSpec

BASE: dict[str, Any] = {"data": {"target": "y"}}


def errors(**overrides: Any) -> list[tuple[str, str]]:
    spec = {**BASE, **overrides}
    with pytest.raises(ValidationError) as info:
        TrainSpec.model_validate(spec)
    return [(".".join(map(str, e["loc"])), e["msg"]) for e in info.value.errors()]


def fields(**overrides: Any) -> list[str]:
    return [loc for loc, _ in errors(**overrides)]


def test_defaults_are_valid() -> None:
    spec = TrainSpec.model_validate(BASE)
    assert spec.hyper.optimizer == "adam" and spec.workers == 1
    assert spec.data.validation_split == 0.2 and spec.model.hidden == [64, 64]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"hyper": {"optimizer": "lbfgs"}}, "hyper.optimizer"),
        ({"hyper": {"learning_rate": -0.1}}, "hyper.learning_rate"),
        ({"hyper": {"learning_rate": 0}}, "hyper.learning_rate"),
        ({"hyper": {"epochs": 0}}, "hyper.epochs"),
        ({"hyper": {"batch_size": 70000}}, "hyper.batch_size"),
        ({"hyper": {"l1": -1}}, "hyper.l1"),
        ({"hyper": {"schedule": "exponential"}}, "hyper.schedule"),
        ({"hyper": {"loss": "hinge"}}, "hyper.loss"),
        ({"data": {"target": "y", "validation_split": 0}}, "data.validation_split"),
        ({"data": {"target": "y", "validation_split": 1.0}}, "data.validation_split"),
        ({"data": {"target": "y", "validation_split": 1.5}}, "data.validation_split"),
        ({"workers": 9}, "workers"),
        ({"workers": 0}, "workers"),
        ({"model": {"architecture": "svm"}}, "model.architecture"),
        ({"model": {"hidden": [0]}}, "model.hidden.0"),
        ({"model": {"dropout": 1.0}}, "model.dropout"),
        ({"model": {"cell": "elman"}}, "model.cell"),
        ({"hyper": {"lr": 0.1}}, "hyper.lr"),  # unknown names are refused, not ignored
    ],
)
def test_bad_values_name_their_field(overrides: dict[str, Any], field: str) -> None:
    assert field in fields(**overrides)


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ({"model": {"architecture": "transformer"}, "data": {"target": "y"}}, "data.text_field"),
        ({"model": {"architecture": "cnn"}, "data": {"target": "y"}}, "data.image_field"),
        ({"model": {"architecture": "rnn"}, "data": {"target": "y"}}, "data.sequence_field"),
        ({"data": {}}, "data.target"),
        ({"data": {"target": "y", "text_field": "t"}}, "data.text_field"),
        (
            {
                "model": {"architecture": "transformer", "d_model": 30, "heads": 4},
                "data": {"target": "y", "text_field": "t"},
            },
            "model.d_model",
        ),
        (
            {"data": {"target": "y", "task": "regression"}, "hyper": {"loss": "cross_entropy"}},
            "hyper.loss",
        ),
        (
            {"model": {"architecture": "autoencoder"}, "data": {"task": "classification"}},
            "data.task",
        ),
    ],
)
def test_inconsistent_specs_name_the_field(spec: dict[str, Any], names: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrainSpec.model_validate(spec)
    assert names in str(info.value)


def test_autoencoder_needs_no_target() -> None:
    spec = TrainSpec.model_validate({"model": {"architecture": "autoencoder"}})
    assert spec.task == "reconstruction"


def test_spec_round_trips_through_json() -> None:
    spec = TrainSpec.model_validate({**BASE, "hyper": {"optimizer": "adamw", "l2": 0.01}})
    assert TrainSpec.model_validate_json(spec.model_dump_json()) == spec


def test_importing_the_package_does_not_import_torch() -> None:
    code = "import sys, modelplane.training; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # the gateway validates specs without paying for torch
