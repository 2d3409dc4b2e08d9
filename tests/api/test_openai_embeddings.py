"""``POST /v1/embeddings`` with the openai SDK, unchanged, against a served MiniLM (ONNX)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from modelplane import Client
from modelplane.runtimes import Runtime, RuntimeOptions, runtime_class
from modelplane.settings import Settings
from tests.conftest import LiveServer
from tests.runtimes.minilm import exported_onnx

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported_onnx(tmp_path_factory)


@pytest.fixture(scope="module")
def local(onnx_folder: Path) -> Runtime:
    """The same model in process, for the expected answers."""
    return runtime_class("transformers").load(onnx_folder, RuntimeOptions(task="embedding"))


def wait_ready(http: httpx.Client, name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = http.get(f"/api/v1/deployments/{name}").json()
        if body["state"] == "ready":
            return
        assert body["state"] != "failed", body["reason"]
        time.sleep(0.1)
    raise AssertionError(f"deployment {name} did not become ready")


@pytest.fixture(scope="module")
def served(onnx_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module: ``minilm`` (task feature-extraction, batches of at most
    16) and ``double`` (not an embedding model) deployed."""
    server = LiveServer(Settings(data_dir=tmp_path_factory.mktemp("openai") / "data")).start()
    try:
        with Client(server.url) as c:
            c.create_model("minilm", task="feature-extraction")
            c.upload_version("minilm", onnx_folder, "transformers")
            c.create_model("double")
            c.upload_version("double", _double(onnx_folder.parent), "onnx")
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for name in ("minilm", "double"):
                body = {"name": name, "model": name, "max_batch_size": 16}
                r = http.post("/api/v1/deployments", json=body)
                assert r.status_code == 201, r.text
            for name in ("minilm", "double"):
                wait_ready(http, name)
        yield server
    finally:
        server.stop()


@pytest.fixture
def http(served: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=30) as c:
        yield c


def _double(folder: Path) -> Path:
    from modelplane.examples import double_onnx

    path = folder / "double.onnx"
    if not path.exists():
        path.write_bytes(double_onnx())
    return path


@pytest.fixture
def oai(served: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=served.url + "/v1", api_key="x", max_retries=0) as c:
        yield c


def expected(local: Runtime, texts: list[str]) -> tuple[np.ndarray, int]:
    out = local.predict({"text": np.array(texts, dtype=object)})
    return out["embedding"], int(out["tokens"].sum())


def test_single_string(oai: openai.OpenAI, local: Runtime) -> None:
    resp = oai.embeddings.create(model="minilm", input="hello world", encoding_format="float")
    want, tokens = expected(local, ["hello world"])
    assert resp.object == "list"
    assert resp.model == "minilm"
    assert [(d.object, d.index) for d in resp.data] == [("embedding", 0)]
    np.testing.assert_allclose(resp.data[0].embedding, want[0], atol=1e-6)
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == tokens == 4


def test_list_longer_than_a_batch_keeps_its_order(oai: openai.OpenAI, local: Runtime) -> None:
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'finance'}" for i in range(40)]
    resp = oai.embeddings.create(model="minilm", input=texts, encoding_format="float")
    want, tokens = expected(local, texts)
    assert [d.index for d in resp.data] == list(range(40))
    got = np.array([d.embedding for d in resp.data], dtype=np.float32)
    assert got.shape == (40, 384)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert resp.usage.prompt_tokens == tokens


def test_base64_is_the_sdk_default(oai: openai.OpenAI, local: Runtime, http: httpx.Client) -> None:
    texts = ["The cat sat on the mat.", "A feline rested on a rug.", "Bond yields rose."]
    resp = oai.embeddings.create(model="minilm", input=texts)  # the SDK asks for base64
    want, _ = expected(local, texts)
    got = np.array([d.embedding for d in resp.data], dtype=np.float32)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[0] @ got[1] > got[0] @ got[2]

    raw = http.post(
        "/v1/embeddings", json={"model": "minilm", "input": texts[0], "encoding_format": "base64"}
    ).json()
    vector = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, want[0], atol=1e-6)


def test_unknown_model_is_not_found(oai: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        oai.embeddings.create(model="nope", input="hello")
    assert err.value.code == "model_not_found"
    r = http.post("/v1/embeddings", json={"model": "nope", "input": "hello"})
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["type"] == "invalid_request_error"
    assert "nope" in error["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"model": "minilm", "input": []},
        {"model": "minilm", "input": [""]},
        {"model": "minilm", "input": [[1, 2, 3]]},
        {"model": "minilm", "input": "x", "encoding_format": "int8"},
        {"model": "minilm", "input": "x", "dimensions": 12},
        {"input": "x"},
    ],
)
def test_invalid_requests_are_400_in_openai_shape(
    http: httpx.Client, body: dict[str, object]
) -> None:
    r = http.post("/v1/embeddings", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["type"] == "invalid_request_error"


def test_empty_list_through_the_sdk(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model="minilm", input=[])


def test_a_model_that_does_not_embed_is_refused(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="'double' is not an embedding model"):
        oai.embeddings.create(model="double", input="hello")


def test_not_json_is_400(http: httpx.Client) -> None:
    r = http.post(
        "/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert "error" in r.json()


def test_documented_in_openapi(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    assert "post" in spec["paths"]["/v1/embeddings"]
