"""``Client.upload_sklearn``: convert with skl2onnx on the client, serve with onnxruntime."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelplane import Client
from tests.conftest import LiveServer


@pytest.fixture
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c


def deploy(http: httpx.Client, name: str, model: str) -> None:
    r = http.post("/api/v1/deployments", json={"name": name, "model": model, "max_batch_size": 256})
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = http.get(f"/api/v1/deployments/{name}").json()
        if body["state"] == "ready":
            return
        assert body["state"] != "failed", body["reason"]
        time.sleep(0.05)
    raise AssertionError(f"deployment {name} did not become ready")


def infer(http: httpx.Client, name: str, x: np.ndarray) -> dict[str, Any]:
    r = http.post(
        f"/v2/models/{name}/infer",
        json={"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                          "data": x.ravel().tolist()}]},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    return {o["name"]: o for o in r.json()["outputs"]}


@pytest.mark.parametrize("kind", ["logistic", "pipeline"])
def test_upload_deploy_and_infer_iris(client: Client, http: httpx.Client, kind: str) -> None:
    x, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=1000)
    estimator = make_pipeline(StandardScaler(), clf) if kind == "pipeline" else clf
    estimator.fit(x, y)
    client.create_model("iris", task="tabular-classification")

    version = client.upload_sklearn("iris", estimator, x[:5], description="iris", tags={"k": kind})
    assert version.format == "sklearn_onnx"
    assert version.description == "iris"
    assert version.source["library"] == "scikit-learn"
    sig = version.signature
    assert [(s.name, s.dtype, s.shape) for s in sig.inputs] == [("input", "float32", [-1, 4])]
    assert {s.name for s in sig.outputs} == {"label", "probabilities"}

    deploy(http, "iris", "iris")
    xs = x.astype(np.float32)
    outputs = infer(http, "iris", xs)
    labels = np.array(outputs["label"]["data"])
    probs = np.array(outputs["probabilities"]["data"], dtype=np.float32).reshape(len(x), 3)
    np.testing.assert_array_equal(labels, estimator.predict(xs))
    np.testing.assert_allclose(probs, estimator.predict_proba(xs), atol=1e-4)
