"""Helpers for the monitoring tests: scrape /metrics into numbers, serve tiny models."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelplane.examples import double_onnx
from modelplane.settings import Settings
from tests.auth.conftest import start_realm  # noqa: F401 - a fixture for the usage tests
from tests.conftest import LiveServer
from tests.monitoring.models import text_embedding_onnx
from tests.serving.conftest import api_client, deploy, infer, publish, wait_ready

Sample = tuple[str, frozenset[tuple[str, str]]]
X = np.arange(8, dtype=np.float32).reshape(2, 4)


class Scrape:
    """One /metrics answer: ``value(name, **labels)`` sums the samples whose labels match."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[Sample, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def value(self, name: str, **labels: str) -> float:
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)

    def names(self) -> set[str]:
        return {n for n, _ in self.samples}


def scrape(client: httpx.Client, url: str, **kwargs: object) -> Scrape:
    r = client.get(f"{url}/metrics", **kwargs)  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return Scrape(r.text)


def serve_models(url: str) -> None:
    """``double`` (OIP/TF Serving, batches of up to 8 rows), ``embed`` (OpenAI embeddings)
    and ``spare`` (a second copy of double, for unloading)."""
    with api_client(url) as api:
        publish(api, "double", double_onnx())
        api.post("/models", json={"name": "embed", "task": "feature-extraction"})
        r = api.post(
            "/models/embed/versions",
            files={"file": ("model.onnx", text_embedding_onnx(), "application/octet-stream")},
            data={"format": "onnx"},
        )
        assert r.status_code == 201, r.text
        deploy(api, "double", "double", max_batch_size=8)
        deploy(api, "embed", "embed", max_batch_size=8)
        deploy(api, "spare", "double")
        for name in ("double", "embed", "spare"):
            wait_ready(api, name)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("monitoring") / "data"
    server = LiveServer(Settings(data_dir=data, job_slots=0, usage_flush_seconds=0.2)).start()
    try:
        serve_models(server.url)
        yield server
    finally:
        server.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as c:
        yield c


def oip(client: httpx.Client, url: str, model: str = "double", x: np.ndarray = X) -> int:
    return infer(client, url, model, x).status_code
