"""The skops runtime: loads only allow-listed types, predicts labels and probabilities."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer

from modelplane.errors import InvalidInput
from modelplane.runtimes import RuntimeOptions, runtime_class
from modelplane.runtimes.skops import allowed_type
from tests.conftest import LiveServer


class Gadget:
    """A class from outside the allow-list (skops will not build it unless trusted)."""

    def __init__(self) -> None:
        self.value = 42


def dump(obj: Any, folder: Path) -> Path:
    import skops.io as sio

    folder.mkdir(parents=True, exist_ok=True)
    sio.dump(obj, folder / "model.skops")
    return folder


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray, LogisticRegression]:
    x, y = load_iris(return_X_y=True)
    return x, y, LogisticRegression(max_iter=500).fit(x, y)


def test_logistic_regression_predicts_like_sklearn(
    tmp_path: Path, iris: tuple[np.ndarray, np.ndarray, LogisticRegression]
) -> None:
    x, _, clf = iris
    rt = runtime_class("skops").load(dump(clf, tmp_path / "a"), RuntimeOptions())
    rt.warmup()
    sig = rt.metadata()
    assert [(s.name, s.dtype, s.shape) for s in sig.inputs] == [("input", "float64", [-1, 4])]
    assert [(s.name, s.dtype, s.shape) for s in sig.outputs] == [
        ("label", "int64", [-1]),
        ("probabilities", "float64", [-1, 3]),
    ]
    out = rt.predict({"input": x})
    np.testing.assert_array_equal(out["label"], clf.predict(x))
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(x))


def test_sklearn_types_beyond_skops_defaults_are_allowed(
    tmp_path: Path, iris: tuple[np.ndarray, np.ndarray, LogisticRegression]
) -> None:
    x, y, _ = iris
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    rt = runtime_class("skops").load(dump(forest, tmp_path / "f"), RuntimeOptions())
    np.testing.assert_array_equal(rt.predict({"input": x})["label"], forest.predict(x))


def test_string_labels_come_back_as_strings(
    tmp_path: Path, iris: tuple[np.ndarray, np.ndarray, LogisticRegression]
) -> None:
    x, y, _ = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = LogisticRegression(max_iter=500).fit(x, names)
    rt = runtime_class("skops").load(dump(clf, tmp_path / "s"), RuntimeOptions())
    assert rt.metadata().outputs[0].dtype == "string"
    out = rt.predict({"input": x[:3]})
    assert out["label"].dtype == object
    assert out["label"].tolist() == clf.predict(x[:3]).tolist()


@pytest.mark.parametrize(
    ("obj", "named"),
    [
        (FunctionTransformer(func=os.system), "posix.system"),
        (FunctionTransformer(func=np.save), "numpy.save"),
        (Gadget(), "tests.runtimes.test_skops.Gadget"),
    ],
)
def test_types_outside_the_allow_list_are_refused(tmp_path: Path, obj: Any, named: str) -> None:
    folder = dump(obj, tmp_path / "bad")
    with pytest.raises(InvalidInput) as err:
        runtime_class("skops").load(folder, RuntimeOptions())
    assert named in err.value.message
    assert "trusted" in err.value.message


def test_an_admin_can_mark_a_model_trusted(tmp_path: Path) -> None:
    folder = dump(FunctionTransformer(func=np.save), tmp_path / "t")
    with pytest.raises(InvalidInput, match="not an estimator"):
        runtime_class("skops").load(folder, RuntimeOptions(trusted=True))  # loads, then checks


def test_allow_list() -> None:
    assert allowed_type("sklearn.tree._tree.Tree")
    assert allowed_type("scipy.sparse._csr.csr_matrix")
    assert allowed_type("numpy.dtype")
    assert allowed_type("numpy.log1p")  # a ufunc: pure arithmetic
    assert not allowed_type("numpy.save")  # a function that writes files
    assert not allowed_type("numpy.no_such_thing")
    assert not allowed_type("builtins.eval")
    assert not allowed_type("posix.system")
    assert not allowed_type("sklearn")


@pytest.mark.slow
def test_served_through_a_worker(
    server: LiveServer,
    tmp_path: Path,
    iris: tuple[np.ndarray, np.ndarray, LogisticRegression],
) -> None:
    x, _, clf = iris
    path = dump(clf, tmp_path / "w") / "model.skops"
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.post("/api/v1/models", json={"name": "iris"}).status_code == 201
        r = http.post(
            "/api/v1/models/iris/versions",
            files={"file": ("model.skops", path.read_bytes())},
            data={"metadata": '{"format": "skops"}'},
        )
        assert r.status_code == 201, r.text
        r = http.post("/api/v1/deployments", json={"name": "iris", "model": "iris"})
        assert r.status_code == 201, r.text
        wait_ready(http, "iris")
        r = http.post(
            "/v2/models/iris/infer",
            json={"inputs": [{"name": "input", "datatype": "FP64", "shape": [5, 4],
                              "data": x[:5].ravel().tolist()}]},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        outputs = {o["name"]: o for o in r.json()["outputs"]}
        assert outputs["label"]["data"] == clf.predict(x[:5]).tolist()
        np.testing.assert_allclose(
            np.array(outputs["probabilities"]["data"]).reshape(5, 3), clf.predict_proba(x[:5])
        )


def wait_ready(http: httpx.Client, name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = http.get(f"/api/v1/deployments/{name}").json()
        if body["state"] == "ready":
            return
        assert body["state"] != "failed", body["reason"]
        time.sleep(0.1)
    raise AssertionError(f"deployment {name} did not become ready")
