"""Open Inference Protocol v2 against a live server, through tritonclient and by hand."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from modelplane.examples import double_onnx
from modelplane.settings import Settings
from tests.conftest import LiveServer
from tests.serving.conftest import (
    api_client,
    deploy,
    pid_alive,
    publish,
    status,
    wait_for,
    wait_ready,
    worker_pids,
)
from tests.serving.models import scalar_output_onnx, scale_onnx, strings_onnx

MAX_BODY = 1024 * 1024
WIDE = 8192  # one row of the "wide" model is 32 KiB: a full batch goes through shared memory
X = np.arange(8, dtype=np.float32).reshape(2, 4)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for this module, with a few deployments that no test changes."""
    data = tmp_path_factory.mktemp("oip") / "data"
    srv = LiveServer(Settings(data_dir=data, max_infer_bytes=MAX_BODY)).start()
    try:
        with api_client(srv.url) as api:
            publish(api, "double", double_onnx(), alias="production")
            deploy(api, "double", "double@production", max_batch_size=8, max_batch_delay_ms=1)
            publish(api, "echo", strings_onnx())
            deploy(api, "echo", "echo", max_batch_size=8)
            publish(api, "total", scalar_output_onnx())
            deploy(api, "total", "total", max_batch_size=1)
            publish(api, "wide", scale_onnx(2.0, width=WIDE))
            deploy(api, "wide", "wide", max_batch_size=8)
            for name in ("double", "echo", "total", "wide"):
                wait_ready(api, name)
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(live: LiveServer) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=f"127.0.0.1:{live.port}", network_timeout=60)
    yield c
    c.close()


@pytest.fixture
def http(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=60) as c:
        yield c


@pytest.fixture
def api(live: LiveServer) -> Iterator[httpx.Client]:
    with api_client(live.url) as c:
        yield c


def fp32(name: str, arr: np.ndarray, binary: bool) -> triton.InferInput:
    i = triton.InferInput(name, list(arr.shape), "FP32")
    i.set_data_from_numpy(arr, binary_data=binary)
    return i


def x_input(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "x",
        "shape": [2, 4],
        "datatype": "FP32",
        "data": X.ravel().tolist(),
    } | overrides


def binary_request(doc: dict[str, Any], *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(doc).encode()
    return head + b"".join(blobs), {
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }


def assert_error(r: httpx.Response, status_code: int, *words: str) -> str:
    assert r.status_code == status_code, r.text
    assert r.headers["content-type"].startswith("application/json")
    message = r.json()["error"]
    assert isinstance(message, str)
    for word in words:
        assert word.lower() in message.lower(), message
    return message


# -- server and model metadata ------------------------------------------------------
def test_server_is_live_and_ready_and_describes_itself(
    client: triton.InferenceServerClient,
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "modelplane"
    assert meta["version"]
    assert {"binary_tensor_data", "model_repository"} <= set(meta["extensions"])


def test_model_metadata(client: triton.InferenceServerClient) -> None:
    meta = client.get_model_metadata("double")
    assert meta == {
        "name": "double",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
    }
    assert client.get_model_metadata("double", model_version="1") == meta
    strings = client.get_model_metadata("echo")
    assert strings["inputs"] == [{"name": "x", "datatype": "BYTES", "shape": [-1, 2]}]


def test_metadata_of_a_version_that_is_not_served_is_404(
    client: triton.InferenceServerClient, http: httpx.Client
) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("double", model_version="2")
    assert info.value.status() == "404"
    assert_error(http.get("/v2/models/double/versions/2"), 404, "serving version 1")
    assert_error(http.get("/v2/models/ghost"), 404, "ghost")


def test_model_readiness(client: triton.InferenceServerClient) -> None:
    assert client.is_model_ready("double")
    assert client.is_model_ready("double", model_version="1")
    assert not client.is_model_ready("double", model_version="7")
    assert not client.is_model_ready("ghost")


def test_model_config_is_triton_style(client: triton.InferenceServerClient) -> None:
    config = client.get_model_config("double")
    assert config["name"] == "double"
    assert config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 8
    # With batching on, dims leave out the batch dimension, as in Triton.
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}]
    assert config["output"] == [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 1000
    assert config["instance_group"] == [{"count": 1, "kind": "KIND_CPU"}]
    strings = client.get_model_config("echo")
    assert strings["input"] == [{"name": "x", "data_type": "TYPE_STRING", "dims": [2]}]


# -- inference ----------------------------------------------------------------------
@pytest.mark.parametrize("binary_in", [True, False], ids=["bin-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["bin-out", "json-out"])
def test_infer_through_tritonclient(
    client: triton.InferenceServerClient, binary_in: bool, binary_out: bool
) -> None:
    result = client.infer(
        "double",
        [fp32("x", X, binary_in)],
        outputs=[triton.InferRequestedOutput("y", binary_data=binary_out)],
        request_id="req-7",
    )
    np.testing.assert_array_equal(result.as_numpy("y"), X * 2)
    response = result.get_response()
    assert response["model_name"] == "double"
    assert response["model_version"] == "1"
    assert response["id"] == "req-7"
    (out,) = response["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("y", "FP32", [2, 4])
    assert ("data" in out) is not binary_out


def test_infer_without_naming_outputs_returns_them_all(
    client: triton.InferenceServerClient,
) -> None:
    result = client.infer("double", [fp32("x", X, True)])
    np.testing.assert_array_equal(result.as_numpy("y"), X * 2)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_large_tensors_round_trip(client: triton.InferenceServerClient, binary: bool) -> None:
    x = (np.arange(8 * WIDE) % 1000).astype(np.float32).reshape(8, WIDE)
    result = client.infer(
        "wide",
        [fp32("x", x, binary)],
        outputs=[triton.InferRequestedOutput("y", binary_data=binary)],
    )
    np.testing.assert_array_equal(result.as_numpy("y"), x * 2)


def test_json_infer_by_hand(http: httpx.Client) -> None:
    r = http.post("/v2/models/double/infer", json={"id": "abc", "inputs": [x_input()]})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {
        "model_name": "double",
        "model_version": "1",
        "id": "abc",
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [2, 4], "data": (X * 2).ravel().tolist()}
        ],
    }


def test_binary_infer_by_hand(http: httpx.Client) -> None:
    doc = {
        "inputs": [{**x_input(data=None), "parameters": {"binary_data_size": X.nbytes}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }
    del doc["inputs"][0]["data"]
    body, headers = binary_request(doc, X.tobytes())
    r = http.post("/v2/models/double/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:n])
    (out,) = head["outputs"]
    assert out["parameters"] == {"binary_data_size": X.nbytes}
    got = np.frombuffer(r.content[n:], dtype=np.float32).reshape(out["shape"])
    np.testing.assert_array_equal(got, X * 2)


def test_binary_data_output_parameter_makes_every_output_binary(http: httpx.Client) -> None:
    r = http.post(
        "/v2/models/double/infer",
        json={"inputs": [x_input()], "parameters": {"binary_data_output": True}},
    )
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    got = np.frombuffer(r.content[n:], dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(got, X * 2)


@pytest.mark.parametrize("binary_in", [True, False], ids=["bin-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["bin-out", "json-out"])
def test_bytes_tensors_through_tritonclient(
    client: triton.InferenceServerClient, binary_in: bool, binary_out: bool
) -> None:
    words = np.array([[b"a", "ünï".encode()], [b"", b"x y z"]], dtype=object)
    i = triton.InferInput("x", [2, 2], "BYTES")
    i.set_data_from_numpy(words, binary_data=binary_in)
    result = client.infer(
        "echo", [i], outputs=[triton.InferRequestedOutput("y", binary_data=binary_out)]
    )
    got = result.as_numpy("y")
    assert got.shape == (2, 2)
    as_bytes = [[v if isinstance(v, bytes) else v.encode() for v in row] for row in got.tolist()]
    assert as_bytes == words.tolist()


def test_bytes_input_that_is_not_utf8_is_refused_not_a_crash(http: httpx.Client) -> None:
    blob = b"".join(struct.pack("<I", len(v)) + v for v in (b"\xff\xfe", b"ok"))
    doc = {
        "inputs": [
            {
                "name": "x",
                "shape": [1, 2],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(blob)},
            }
        ]
    }
    body, headers = binary_request(doc, blob)
    r = http.post("/v2/models/echo/infer", content=body, headers=headers)
    assert_error(r, 422, "utf-8")
    ok = http.post(
        "/v2/models/echo/infer",
        json={"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}]},
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["outputs"][0]["data"] == ["a", "b"]


def test_a_scalar_output_keeps_its_empty_shape(http: httpx.Client) -> None:
    r = http.post("/v2/models/total/infer", json={"inputs": [x_input(shape=[1, 4], data=[1] * 4)]})
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["shape"] == []
    assert out["data"] == [4.0]


def test_infer_on_the_served_version_and_404_on_another(
    client: triton.InferenceServerClient, http: httpx.Client
) -> None:
    result = client.infer("double", [fp32("x", X, True)], model_version="1")
    np.testing.assert_array_equal(result.as_numpy("y"), X * 2)
    body = {"inputs": [x_input()]}
    ok = http.post("/v2/models/double/versions/1/infer", json=body)
    assert ok.status_code == 200, ok.text
    assert ok.json()["model_version"] == "1"
    assert_error(http.post("/v2/models/double/versions/2/infer", json=body), 404, "version 2")
    assert_error(http.post("/v2/models/double/versions/one/infer", json=body), 404, "one")
    with pytest.raises(InferenceServerException) as info:
        client.infer("double", [fp32("x", X, True)], model_version="2")
    assert info.value.status() == "404"
    assert "serving version 1" in (info.value.message() or "")


def test_unknown_model_is_404(client: triton.InferenceServerClient, http: httpx.Client) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.infer("ghost", [fp32("x", X, True)])
    assert info.value.status() == "404"
    assert_error(http.post("/v2/models/ghost/infer", json={"inputs": [x_input()]}), 404, "ghost")


# -- repository extension -------------------------------------------------------------
def test_repository_index_load_and_unload(
    live: LiveServer, client: triton.InferenceServerClient, http: httpx.Client, api: httpx.Client
) -> None:
    publish(api, "repo", scale_onnx(5.0))
    deploy(api, "repo", "repo", max_batch_size=4)
    pids = worker_pids(wait_ready(api, "repo"))
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["repo"] == {"name": "repo", "state": "READY", "version": "1"}
    assert index["double"]["state"] == "READY"

    client.unload_model("repo")
    assert not client.is_model_ready("repo")
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["repo"]["state"] == "UNLOADED"
    assert "version" not in index["repo"]
    r = http.post("/v2/models/repo/infer", json={"inputs": [x_input()]})
    assert_error(r, 503, "unloaded")
    assert int(r.headers["retry-after"]) >= 1
    assert wait_for(lambda: not any(pid_alive(p) for p in pids)), "workers still run"
    assert status(api, "repo")["state"] == "unloaded"  # the deployment itself remains

    client.load_model("repo")
    assert client.is_model_ready("repo")
    result = client.infer("repo", [fp32("x", X, True)])
    np.testing.assert_array_equal(result.as_numpy("y"), X * 5)


def test_repository_load_deploys_a_registry_model_by_name(
    client: triton.InferenceServerClient, api: httpx.Client
) -> None:
    publish(api, "fresh", scale_onnx(7.0))
    client.load_model("fresh")
    assert client.is_model_ready("fresh")
    np.testing.assert_array_equal(client.infer("fresh", [fp32("x", X, True)]).as_numpy("y"), X * 7)
    assert status(api, "fresh")["model"] == "fresh"
    with pytest.raises(InferenceServerException) as info:
        client.load_model("ghost")
    assert info.value.status() == "404"
    with pytest.raises(InferenceServerException) as info:
        client.unload_model("ghost")
    assert info.value.status() == "404"


# -- bad requests: a precise 4xx naming the problem, never a 500 -----------------------
def _bin_doc(size: int, shape: list[int] | None = None) -> dict[str, Any]:
    item = {"name": "x", "shape": shape or [2, 4], "datatype": "FP32"}
    return {"inputs": [{**item, "parameters": {"binary_data_size": size}}]}


BAD_JSON: list[Any] = [
    pytest.param({"inputs": [x_input(name="z")]}, 400, ["unknown input", "z"], id="wrong-name"),
    pytest.param(
        {"inputs": [x_input(datatype="INT32", data=list(range(8)))]},
        400,
        ["dtype", "float32"],
        id="wrong-dtype",
    ),
    pytest.param(
        {"inputs": [x_input(shape=[2, 3], data=list(range(6)))]},
        400,
        ["shape", "[-1, 4]"],
        id="wrong-shape",
    ),
    pytest.param({"inputs": [x_input(shape=[2, 4, 1])]}, 400, ["shape"], id="wrong-number-of-dims"),
    pytest.param(
        {"inputs": [x_input(data=[[1, 2, 3, 4], [5, 6]])]}, 400, ["ragged"], id="ragged-data"
    ),
    pytest.param(
        {"inputs": [x_input(data=list(range(7)))]}, 400, ["needs 8", "has 7"], id="data-count"
    ),
    pytest.param(
        {"inputs": [x_input(datatype="FP128")]}, 400, ["unknown datatype", "FP128"], id="datatype"
    ),
    pytest.param(
        {"inputs": [x_input(data=["a", "b"] * 4)]}, 400, ["FP32"], id="strings-for-numbers"
    ),
    pytest.param({"inputs": [x_input(shape=[-2, 4])]}, 400, ["shape"], id="negative-dim"),
    pytest.param({"inputs": [x_input(shape="2x4")]}, 400, ["shape"], id="shape-not-a-list"),
    pytest.param({"inputs": []}, 400, ["inputs"], id="no-inputs"),
    pytest.param({"outputs": []}, 400, ["inputs"], id="inputs-missing"),
    pytest.param([x_input()], 400, ["inputs"], id="body-is-a-list"),
    pytest.param({"inputs": [{"shape": [2, 4]}]}, 400, ["name"], id="input-without-name"),
    pytest.param({"inputs": [x_input(), x_input()]}, 400, ["twice"], id="duplicate-input"),
    pytest.param(
        {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32"}]},
        400,
        ["neither"],
        id="no-data",
    ),
    pytest.param(
        {"inputs": [x_input()], "outputs": [{"name": "nope"}]},
        400,
        ["unknown output", "nope"],
        id="unknown-output",
    ),
    pytest.param({"inputs": [x_input()], "outputs": "y"}, 400, ["outputs"], id="outputs-str"),
    pytest.param({"inputs": [x_input()], "parameters": [1]}, 400, ["parameters"], id="params"),
    pytest.param(
        {"inputs": [x_input(shape=[9, 4], data=[0] * 36)]},
        413,
        ["max_batch_size of 8"],
        id="batch-over-max",
    ),
]


@pytest.mark.parametrize(("doc", "code", "words"), BAD_JSON)
def test_bad_json_requests(http: httpx.Client, doc: Any, code: int, words: list[str]) -> None:
    assert_error(http.post("/v2/models/double/infer", json=doc), code, *words)


BAD_BODIES: list[Any] = [
    pytest.param(b"{not json", {}, ["not valid json"], id="malformed-json"),
    pytest.param(b"", {}, ["not valid json"], id="empty-body"),
    pytest.param(
        binary_request(_bin_doc(32), X.tobytes())[0],
        {"Inference-Header-Content-Length": "abc"},
        ["Inference-Header-Content-Length"],
        id="header-length-not-a-number",
    ),
    pytest.param(
        binary_request(_bin_doc(32), X.tobytes())[0],
        {"Inference-Header-Content-Length": "-1"},
        ["Inference-Header-Content-Length"],
        id="header-length-negative",
    ),
    pytest.param(
        binary_request(_bin_doc(32), X.tobytes())[0],
        {"Inference-Header-Content-Length": "100000"},
        ["Inference-Header-Content-Length"],
        id="header-length-past-the-end",
    ),
    pytest.param(
        *binary_request(_bin_doc(64), X.tobytes()),
        ["binary_data_size", "past the end"],
        id="binary-size-past-the-end",
    ),
    pytest.param(
        *binary_request(_bin_doc(32), X.tobytes() + b"\x00\x01"),
        ["no input claims"],
        id="trailing-binary-bytes",
    ),
    pytest.param(
        *binary_request(_bin_doc(28), X.tobytes()[:28]),
        ["binary_data_size 28", "32 bytes"],
        id="binary-size-does-not-match-shape",
    ),
    pytest.param(
        *binary_request(_bin_doc(-4), X.tobytes()), ["binary_data_size"], id="negative-size"
    ),
    pytest.param(
        *binary_request(
            {"inputs": [{**_bin_doc(3)["inputs"][0], "datatype": "BYTES", "shape": [1, 2]}]},
            b"\x05\x00\x00",
        ),
        ["truncated"],
        id="truncated-bytes-element",
    ),
]


@pytest.mark.parametrize(("body", "headers", "words"), BAD_BODIES)
def test_bad_bodies(
    http: httpx.Client, body: bytes, headers: dict[str, str], words: list[str]
) -> None:
    model = "echo" if b"BYTES" in body else "double"
    r = http.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    assert_error(r, 400, *words)


def test_body_over_max_infer_bytes_is_413(http: httpx.Client) -> None:
    big = b'{"inputs": [' + b" " * (MAX_BODY + 10) + b"]}"
    assert_error(http.post("/v2/models/double/infer", content=big), 413, str(MAX_BODY))

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap holds while reading
        for _ in range(3):
            yield b" " * (MAX_BODY // 2)

    assert_error(http.post("/v2/models/double/infer", content=chunks()), 413, str(MAX_BODY))
    ok = http.post("/v2/models/double/infer", json={"inputs": [x_input()]})
    assert ok.status_code == 200, ok.text


def test_x_request_timeout_header_that_is_not_a_number_is_ignored(http: httpx.Client) -> None:
    r = http.post(
        "/v2/models/double/infer",
        json={"inputs": [x_input()]},
        headers={"X-Request-Timeout-Ms": "soon"},
    )
    assert r.status_code == 200, r.text


# Bugs: each of these answers 500 today.
@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({"inputs": [x_input(parameters="binary")]}, id="input-parameters"),
        pytest.param(
            {"inputs": [x_input()], "outputs": [{"name": "y", "parameters": [1]}]},
            id="output-parameters",
        ),
    ],
)
def test_parameters_that_are_not_objects_are_400(http: httpx.Client, doc: Any) -> None:
    assert_error(http.post("/v2/models/double/infer", json=doc), 400, "parameters")


def test_boolean_dimensions_are_400(http: httpx.Client) -> None:
    r = http.post(
        "/v2/models/double/infer", json={"inputs": [x_input(shape=[True, 4], data=[1, 2, 3, 4])]}
    )
    assert_error(r, 400, "shape")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_a_shape_whose_element_count_overflows_is_400(http: httpx.Client, binary: bool) -> None:
    shape = [2**32, 2**32]
    if binary:
        body, headers = binary_request(_bin_doc(0, shape))
        r = http.post("/v2/models/double/infer", content=body, headers=headers)
    else:
        r = http.post("/v2/models/double/infer", json={"inputs": [x_input(shape=shape, data=[])]})
    assert_error(r, 400, "shape")


def test_a_nan_request_timeout_is_not_a_crash(http: httpx.Client) -> None:
    r = http.post(
        "/v2/models/double/infer",
        json={"inputs": [x_input()]},
        headers={"X-Request-Timeout-Ms": "nan"},
    )
    assert r.status_code in (200, 400), r.text


# -- fuzzing: whatever a client sends, the answer is a precise status, never a 500 ---------
DATATYPES = ["FP32", "FP64", "INT32", "INT64", "BOOL", "UINT8", "FP16", "BYTES", "FP8", ""]
scalars = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4),
    st.booleans(),
)
data = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5), max_leaves=20)
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["x", "y", ""]),
        "shape": st.lists(st.integers(0, 9), max_size=3),
        "datatype": st.sampled_from(DATATYPES),
    },
    optional={"data": data, "parameters": st.fixed_dictionaries({}, optional={"x": scalars})},
)
requests = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, max_size=3)},
    optional={
        "id": st.text(max_size=5),
        "outputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["y", "z"])})),
        "parameters": st.dictionaries(st.sampled_from(["timeout", "other"]), scalars),
    },
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=requests, model=st.sampled_from(["double", "echo"]))
def test_any_json_request_gets_a_precise_answer(http: httpx.Client, doc: Any, model: str) -> None:
    r = http.post(f"/v2/models/{model}/infer", json=doc)
    assert r.status_code in (200, 400, 404, 413, 422, 504), r.text
    if r.status_code != 200:
        assert isinstance(r.json()["error"], str)
