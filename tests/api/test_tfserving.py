"""The TensorFlow Serving REST API, through a real server, the way TF Serving answers.

One server per test module (per xdist worker) serves small ONNX models built
here: ``double`` (y = 2x, x float32[-1, 4]), ``add2`` (two inputs, two outputs),
``sum1`` (one value per row, for :regress), ``clf`` (softmax scores and class
labels, for :classify), ``text`` (strings in, strings out) and ``ints`` (int32).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto as TP
from onnx import ValueInfoProto, checker, helper, numpy_helper

from modelplane.app import create_app
from modelplane.examples import double_onnx
from modelplane.settings import Settings
from tests.api.conftest import create_model, upload
from tests.conftest import LiveServer


# -- models --------------------------------------------------------------------------
def _io(name: str, dtype: int, shape: list[Any]) -> ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: Any = ()) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    checker.check_model(model)
    return bytes(model.SerializeToString())


def add2_onnx() -> bytes:
    return _model(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Sub", ["a", "b"], ["diff"]),
        ],
        [_io("a", TP.FLOAT, ["batch", 3]), _io("b", TP.FLOAT, ["batch", 3])],
        [_io("sum", TP.FLOAT, ["batch", 3]), _io("diff", TP.FLOAT, ["batch", 3])],
    )


def sum1_onnx() -> bytes:
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    return _model(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)],
        [_io("x", TP.FLOAT, ["batch", 3])],
        [_io("y", TP.FLOAT, ["batch", 1])],
        [axes],
    )


def clf_onnx() -> bytes:
    """Softmax over x @ w, plus a ``classes`` output naming the 3 classes for every row."""
    w = numpy_helper.from_array(np.array([[1, 0, -1], [0, 1, 1]], dtype=np.float32), "w")
    names = numpy_helper.from_array(np.array([[b"cat", b"dog", b"eel"]], dtype=object), "names")
    one = numpy_helper.from_array(np.array([1], dtype=np.int64), "one")
    return _model(
        [
            helper.make_node("MatMul", ["x", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("Shape", ["x"], ["rows"], end=1),
            helper.make_node("Concat", ["rows", "one"], ["reps"], axis=0),
            helper.make_node("Tile", ["names", "reps"], ["classes"]),
        ],
        [_io("x", TP.FLOAT, ["batch", 2])],
        [_io("probabilities", TP.FLOAT, ["batch", 3]), _io("classes", TP.STRING, ["batch", 3])],
        [w, names, one],
    )


def text_onnx() -> bytes:
    return _model(
        [
            helper.make_node("Identity", ["s"], ["echo"]),
            helper.make_node("Identity", ["s"], ["echo_bytes"]),
        ],
        [_io("s", TP.STRING, ["batch"])],
        [_io("echo", TP.STRING, ["batch"]), _io("echo_bytes", TP.STRING, ["batch"])],
    )


def ints_onnx() -> bytes:
    return _model(
        [helper.make_node("Add", ["n", "n"], ["m"])],
        [_io("n", TP.INT32, ["batch", 2])],
        [_io("m", TP.INT32, ["batch", 2])],
    )


# -- the server ----------------------------------------------------------------------
def _deploy(api: httpx.Client, name: str, model: str, **config: Any) -> None:
    r = api.post("/deployments", json={"name": name, "model": model, **config})
    assert r.status_code == 201, r.text


def _wait_ready(api: httpx.Client, names: list[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        for name in sorted(pending):
            state = api.get(f"/deployments/{name}").json()
            assert state["state"] != "failed", state
            if state["state"] == "ready":
                pending.discard(name)
        assert time.monotonic() < deadline, f"not ready: {pending}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def tf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    server = LiveServer(Settings(data_dir=tmp_path_factory.mktemp("tfserving") / "data")).start()
    api = httpx.Client(base_url=f"{server.url}/api/v1", timeout=30)
    models = {
        "double": double_onnx(),
        "add2": add2_onnx(),
        "sum1": sum1_onnx(),
        "clf": clf_onnx(),
        "text": text_onnx(),
        "ints": ints_onnx(),
    }
    for name, content in models.items():
        create_model(api, name)
        assert upload(api, name, content).status_code == 201
    assert upload(api, "double", double_onnx()).status_code == 201  # version 2, not served
    for alias, version in (("production", 1), ("canary", 2), ("moving", 2)):
        assert api.put(f"/models/double/aliases/{alias}", json={"version": version}).is_success
    _deploy(api, "double", "double@production")
    _deploy(api, "parked", "double@1")
    for name in models:
        if name != "double":
            _deploy(api, name, f"{name}@1", max_batch_size=8)
    _wait_ready(api, [*models, "parked"])
    client = httpx.Client(base_url=server.url, timeout=30)
    assert client.post("/v2/repository/models/parked/unload").status_code == 200
    yield client
    client.close()
    api.close()
    server.stop()


class Reply(Protocol):
    """An httpx response, or the one Starlette's TestClient returns."""

    @property
    def status_code(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    def json(self) -> Any: ...


def ok(r: Reply) -> Any:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return r.json()


def error(r: Reply, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    message: str = body["error"]
    return message


# -- status ----------------------------------------------------------------------------
AVAILABLE_1 = {
    "model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
}


@pytest.mark.parametrize(
    "path",
    ["/v1/models/double", "/v1/models/double/versions/1", "/v1/models/double/labels/production"],
)
def test_status_of_the_served_version(tf: httpx.Client, path: str) -> None:
    assert ok(tf.get(path)) == AVAILABLE_1


def test_status_errors(tf: httpx.Client) -> None:
    assert "version 2" in error(tf.get("/v1/models/double/versions/2"), 404)
    assert "version 7" in error(tf.get("/v1/models/double/versions/7"), 404)
    assert "numeric" in error(tf.get("/v1/models/double/versions/x1"), 400)
    assert "version 2" in error(tf.get("/v1/models/double/labels/canary"), 404)
    assert "nope" in error(tf.get("/v1/models/double/labels/nope"), 404)
    assert "NOPE!" in error(tf.get("/v1/models/double/labels/NOPE!"), 404)
    assert "nosuch" in error(tf.get("/v1/models/nosuch"), 404)
    assert "unloaded" in error(tf.get("/v1/models/parked"), 404)


# -- metadata ----------------------------------------------------------------------------
def test_metadata_is_a_serving_default_signature_def(tf: httpx.Client) -> None:
    def tensor(name: str) -> dict[str, Any]:
        dims = [{"size": "-1", "name": ""}, {"size": "4", "name": ""}]
        shape = {"dim": dims, "unknown_rank": False}
        return {name: {"dtype": "DT_FLOAT", "tensor_shape": shape, "name": name}}

    expected = {
        "model_spec": {"name": "double", "signature_name": "", "version": "1"},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "serving_default": {
                        "inputs": tensor("x"),
                        "outputs": tensor("y"),
                        "method_name": "tensorflow/serving/predict",
                    }
                }
            }
        },
    }
    for path in ("", "/versions/1", "/labels/production"):
        assert ok(tf.get(f"/v1/models/double{path}/metadata")) == expected
    sig = ok(tf.get("/v1/models/text/metadata"))["metadata"]["signature_def"]["signature_def"]
    assert sig["serving_default"]["inputs"]["s"]["dtype"] == "DT_STRING"
    ints = ok(tf.get("/v1/models/ints/metadata"))["metadata"]["signature_def"]["signature_def"]
    assert ints["serving_default"]["outputs"]["m"]["dtype"] == "DT_INT32"


def test_metadata_errors(tf: httpx.Client) -> None:
    assert "version 2" in error(tf.get("/v1/models/double/versions/2/metadata"), 404)
    assert "version 2" in error(tf.get("/v1/models/double/labels/canary/metadata"), 404)
    error(tf.get("/v1/models/nosuch/metadata"), 404)
    r = tf.get("/v1/models/parked/metadata")
    assert "unloaded" in error(r, 503)
    assert r.headers["retry-after"]


# -- predict -----------------------------------------------------------------------------
ROWS = [[1, 2, 3, 4], [0.5, -1, 0, 2.25]]
DOUBLED = [[2.0, 4.0, 6.0, 8.0], [1.0, -2.0, 0.0, 4.5]]


@pytest.mark.parametrize("path", ["", "/versions/1", "/labels/production"])
def test_predict_row_format(tf: httpx.Client, path: str) -> None:
    r = tf.post(f"/v1/models/double{path}:predict", json={"instances": ROWS})
    assert ok(r) == {"predictions": DOUBLED}


def test_predict_row_format_named_and_signature_name(tf: httpx.Client) -> None:
    body = {"signature_name": "serving_default", "instances": [{"x": row} for row in ROWS]}
    assert ok(tf.post("/v1/models/double:predict", json=body)) == {"predictions": DOUBLED}


def test_predict_columnar_unnamed_and_named(tf: httpx.Client) -> None:
    unnamed = ok(tf.post("/v1/models/double:predict", json={"inputs": ROWS}))
    assert unnamed == {"outputs": DOUBLED}
    named = ok(tf.post("/v1/models/double:predict", json={"inputs": {"x": ROWS}}))
    assert named == {"outputs": DOUBLED}


def test_float32_outputs_keep_their_short_form(tf: httpx.Client) -> None:
    r = tf.post("/v1/models/double:predict", json={"instances": [[0.1, 0.2, 0.3, 1e-3]]})
    assert r.text == '{"predictions":[[0.2,0.4,0.6,0.002]]}'


def test_predict_two_inputs_two_outputs(tf: httpx.Client) -> None:
    rows = [{"a": [1, 2, 3], "b": [1, 1, 1]}, {"a": [0, 0, 0], "b": [1, 2, 3]}]
    out = ok(tf.post("/v1/models/add2:predict", json={"instances": rows}))
    assert out == {
        "predictions": [
            {"sum": [2.0, 3.0, 4.0], "diff": [0.0, 1.0, 2.0]},
            {"sum": [1.0, 2.0, 3.0], "diff": [-1.0, -2.0, -3.0]},
        ]
    }
    columns = {"a": [[1, 2, 3], [0, 0, 0]], "b": [[1, 1, 1], [1, 2, 3]]}
    out = ok(tf.post("/v1/models/add2:predict", json={"inputs": columns}))
    assert out == {
        "outputs": {
            "sum": [[2.0, 3.0, 4.0], [1.0, 2.0, 3.0]],
            "diff": [[0.0, 1.0, 2.0], [-1.0, -2.0, -3.0]],
        }
    }


def test_predict_casts_to_integer_inputs(tf: httpx.Client) -> None:
    r = tf.post("/v1/models/ints:predict", json={"instances": [[1, 2], [-3, 40000]]})
    assert ok(r) == {"predictions": [[2, 4], [-6, 80000]]}


def test_predict_strings_and_b64(tf: httpx.Client) -> None:
    hello = base64.b64encode(b"hello").decode()
    body = {"instances": ["hi", {"b64": hello}, "héllo"]}
    out = ok(tf.post("/v1/models/text:predict", json=body))
    as_b64 = [{"b64": base64.b64encode(s.encode()).decode()} for s in ("hi", "hello", "héllo")]
    assert out == {
        "predictions": [
            {"echo": "hi", "echo_bytes": as_b64[0]},
            {"echo": "hello", "echo_bytes": as_b64[1]},
            {"echo": "héllo", "echo_bytes": as_b64[2]},
        ]
    }
    columnar = ok(tf.post("/v1/models/text:predict", json={"inputs": {"s": [{"b64": hello}]}}))
    assert columnar == {"outputs": {"echo": ["hello"], "echo_bytes": [as_b64[1]]}}


def test_predict_accepts_nan_and_infinity(tf: httpx.Client) -> None:
    r = tf.post(
        "/v1/models/double:predict",
        content=b'{"instances": [[1, NaN, Infinity, -Infinity]]}',
    )
    assert ok(r)["predictions"][0][0] == 2.0


# -- predict errors ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "body", "says"),
    [
        ("double", {"instances": [[1, 2, "x", 4]]}, 'JSON Value: "x" Type: String is not of'),
        ("double", {"instances": [[1, 2, None, 4]]}, "Type: Null is not of expected type: float"),
        ("double", {"instances": [[1, 2, 3, 4], [1, 2, 3]]}, "unexpected size: 3 at level: 1"),
        ("double", {"instances": [[1, 2, [3], 4]]}, "list at unexpected level"),
        ("double", {"instances": [[1, 2, 3, 1e39]]}, "to float without loss of precision"),
        ("double", {"instances": [[1, 2, 3, 16777217]]}, "without loss of precision"),
        ("double", {"instances": [[1, 2, 3]]}, "expected shape [-1, 4]"),
        ("double", {"instances": [1, 2, 3, 4]}, "expected shape [-1, 4]"),
        ("double", {"instances": []}, "No values in 'instances' array"),
        ("double", {"instances": {"x": 1}}, "'instances' to be an list/array"),
        ("double", {"instances": [{"y": [1, 2, 3, 4]}]}, "does not have named input: y"),
        ("double", {"instances": [[1, 2, 3, 4], {"x": [1, 2, 3, 4]}]}, "got object at item 1"),
        ("double", {"instances": [{"x": [1, 2, 3, 4]}, [1, 2, 3, 4]]}, "got list at item 1"),
        ("double", {"inputs": {"y": ROWS}}, "does not have named input: y"),
        ("double", {"inputs": ROWS, "instances": ROWS}, "only one of 'inputs' or 'instances'"),
        ("double", {"rows": ROWS}, "Missing 'inputs' or 'instances' key"),
        ("double", {"instances": ROWS, "signature_name": "x"}, '"x" not found in signature'),
        ("double", {"instances": ROWS, "signature_name": 1}, "'signature_name' key must be"),
        ("double", {"inputs": 3.0}, "expected shape [-1, 4] (-1 = any), got []"),
        ("ints", {"instances": [[1, 2.5]]}, "JSON Value: 2.5 Type: Number is not of expected"),
        ("ints", {"instances": [[1, 3000000000]]}, "3000000000 Type: Number is not of"),
        ("ints", {"instances": [[1, True]]}, "not of expected type: int32"),
        ("add2", {"instances": [[1, 2, 3]]}, "instances is a plain list, but expecting list of"),
        ("add2", {"instances": [{"a": [1, 2, 3]}]}, "keys must be equal to: a,b"),
        ("add2", {"inputs": {"a": [[1, 2, 3]]}}, "Missing named input: b in 'inputs' object."),
        ("add2", {"inputs": [[1, 2, 3]]}, "inputs is a plain value/list, but expecting an"),
        ("add2", {"inputs": {"a": [[1, 2, 3]], "b": [[1, 2, 3], [4, 5, 6]]}}, "same batch size"),
        ("text", {"instances": [{"b64": "!!"}]}, "Unable to base64 decode"),
        ("text", {"inputs": {"s": [{"b64": 3}]}}, "not formatted correctly for base64"),
        ("text", {"instances": [{"b64": 3}]}, "does not have named input: b64"),
        ("text", {"instances": [3]}, "Type: Number is not of expected type: string"),
    ],
)
def test_predict_refuses_bad_input_with_400(
    tf: httpx.Client, model: str, body: dict[str, Any], says: str
) -> None:
    assert says in error(tf.post(f"/v1/models/{model}:predict", json=body), 400)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "The document is empty"),
        (b"{not json", "JSON Parse error"),
        (b"[1, 2]", "Is not object"),
        (b"[" * 5000 + b"]" * 5000, "JSON Parse error"),
        (b'{"instances": ' + b"[" * 100 + b"1" + b"]" * 100 + b"}", "nested deeper"),
    ],
)
def test_predict_refuses_malformed_json(tf: httpx.Client, content: bytes, says: str) -> None:
    r = tf.post("/v1/models/double:predict", content=content)
    assert says in error(r, 400)


def test_predict_routes_and_versions(tf: httpx.Client) -> None:
    body = {"instances": ROWS}
    assert "nosuch" in error(tf.post("/v1/models/nosuch:predict", json=body), 404)
    assert "version 2" in error(tf.post("/v1/models/double/versions/2:predict", json=body), 404)
    assert "numeric" in error(tf.post("/v1/models/double/versions/v1:predict", json=body), 400)
    assert "version 2" in error(tf.post("/v1/models/double/labels/canary:predict", json=body), 404)
    assert "nope" in error(tf.post("/v1/models/double/labels/nope:predict", json=body), 404)
    assert "Malformed" in error(tf.post("/v1/models/double/oops/1:predict", json=body), 400)
    assert "Malformed" in error(tf.post("/v1/models/a:b:predict", json=body), 400)
    r = tf.post("/v1/models/parked:predict", json=body)
    assert "unloaded" in error(r, 503)
    assert r.headers["retry-after"]
    assert tf.post("/v1/models/double:explain", json=body).status_code in (404, 405)


def test_batch_over_the_limit_is_413(tf: httpx.Client) -> None:
    rows = [[1, 2, 3]] * 9
    assert "max_batch_size" in error(
        tf.post("/v1/models/sum1:predict", json={"instances": rows}), 413
    )


def test_label_follows_the_alias(tf: httpx.Client) -> None:
    api = "/api/v1/models/double/aliases/moving"
    body = {"instances": ROWS}
    error(tf.post("/v1/models/double/labels/moving:predict", json=body), 404)
    assert tf.put(api, json={"version": 1}).status_code == 200
    assert ok(tf.post("/v1/models/double/labels/moving:predict", json=body)) == {
        "predictions": DOUBLED
    }
    assert ok(tf.get("/v1/models/double/labels/moving")) == AVAILABLE_1


# -- classify and regress ------------------------------------------------------------------
def test_regress_one_value_per_example(tf: httpx.Client) -> None:
    body = {"examples": [{"x": [1, 2, 3]}, {"x": [0.5, 0.25, 0]}]}
    assert ok(tf.post("/v1/models/sum1:regress", json=body)) == {"results": [6.0, 0.75]}
    versioned = ok(tf.post("/v1/models/sum1/versions/1:regress", json=body))
    assert versioned == {"results": [6.0, 0.75]}


def test_regress_context_and_ignored_features(tf: httpx.Client) -> None:
    body = {"context": {"x": [1, 1, 1]}, "examples": [{"id": "a"}, {"x": [2, 2, 2], "id": "b"}]}
    assert ok(tf.post("/v1/models/sum1:regress", json=body)) == {"results": [3.0, 6.0]}


def test_regress_refuses_models_with_more_than_one_value_per_example(tf: httpx.Client) -> None:
    body = {"examples": [{"x": [1, 2, 3, 4]}]}
    says = error(tf.post("/v1/models/double:regress", json=body), 400)
    assert "does not support the Regress API" in says
    assert "y: float32[-1, 4]" in says


def test_classify_with_labels(tf: httpx.Client) -> None:
    body = {"examples": [{"x": [1, 2]}, {"x": [0, 0]}]}
    out = ok(tf.post("/v1/models/clf:classify", json=body))
    expected = np.exp([[1, 2, 1], [0, 0, 0]])
    expected = expected / expected.sum(axis=1, keepdims=True)
    results = out["results"]
    assert [[c[0] for c in row] for row in results] == [["cat", "dog", "eel"]] * 2
    assert np.allclose([[c[1] for c in row] for row in results], expected, atol=1e-6)


def test_classify_without_labels_uses_column_indexes(tf: httpx.Client) -> None:
    body = {"examples": [{"x": [1, 2, 3, 4]}]}
    out = ok(tf.post("/v1/models/double:classify", json=body))
    assert out == {"results": [[["0", 2.0], ["1", 4.0], ["2", 6.0], ["3", 8.0]]]}


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("add2:classify", {"examples": [{"a": [1, 2, 3], "b": [1, 2, 3]}]}, 200, ""),
        ("add2:regress", {"examples": [{"a": [1, 2, 3], "b": [1, 2, 3]}]}, 400, "Regress API"),
        ("text:classify", {"examples": [{"s": "hi"}]}, 400, "does not support the Classify API"),
        ("clf:classify", {"instances": [[1, 2]]}, 400, "key 'examples' is expected"),
        ("clf:classify", {"examples": {"x": [1, 2]}}, 400, "'examples' value to be an list"),
        ("clf:classify", {"examples": []}, 400, "'examples' value is an empty array"),
        ("clf:classify", {"examples": [[1, 2]]}, 400, "Example must be JSON object"),
        ("clf:classify", {"examples": [{"y": [1, 2]}]}, 400, "Feature: x (data type: float)"),
        ("clf:classify", {"examples": [{"x": [1, 2, 3]}]}, 400, "takes shape [2] per example"),
        ("clf:classify", {"examples": [{"x": [1, 2]}, {"x": [1]}]}, 400, "1 value(s) in example 1"),
        ("clf:classify", {"examples": [{"x": [[1, 2]]}]}, 400, "unexpected JSON type: Array"),
        ("clf:classify", {"examples": [{"x": [1, "a"]}]}, 400, "is not of expected type: float"),
        ("clf:classify", {"examples": [{"x": [1, 2]}], "context": 3}, 400, "must be JSON object"),
        ("sum1:regress", {"examples": [{"x": [1, 2, 3]}] * 9}, 413, "max_batch_size"),
        ("sum1:regress", {"examples": [{"x": [1, 2, 3]}], "signature_name": "r"}, 400, '"r"'),
        ("nosuch:regress", {"examples": [{"x": [1, 2, 3]}]}, 404, "nosuch"),
    ],
)
def test_classify_and_regress_errors(
    tf: httpx.Client, path: str, body: dict[str, Any], status: int, says: str
) -> None:
    r = tf.post(f"/v1/models/{path}", json=body)
    if status == 200:
        assert ok(r)["results"]
    else:
        assert says in error(r, status)


# -- never a 500, and the OpenAPI document ---------------------------------------------------
JUNK: list[Any] = [
    None,
    0,
    "x",
    [],
    {},
    [None],
    [[]],
    [[[]]],
    [{}],
    [{"b64": "AA=="}],
    [[1, 2, 3, 4]] * 3 + [[1, 2, 3, "4"]],
    {"x": None},
    {"x": [[1, 2, 3, 4]], "y": 1},
    [[2**70, 1, 1, 1]],
    [[-1e308, 1e308, 1, 1]],
    [[True, False, True, False]],
]


@pytest.mark.parametrize("model", ["double", "add2", "text", "ints", "clf"])
def test_junk_never_gets_a_500(tf: httpx.Client, model: str) -> None:
    for junk in JUNK:
        for body in ({"instances": junk}, {"inputs": junk}, {"examples": junk, "context": junk}):
            for verb in ("predict", "classify", "regress"):
                r = tf.post(f"/v1/models/{model}:{verb}", json=body)
                assert r.status_code < 500, (verb, body, r.text)
                if r.status_code != 200:
                    assert set(r.json()) == {"error"}


def test_openapi_lists_the_tf_serving_routes(tf: httpx.Client) -> None:
    paths = ok(tf.get("/openapi.json"))["paths"]
    for path in (
        "/v1/models/{model}",
        "/v1/models/{model}/versions/{version}",
        "/v1/models/{model}/labels/{label}/metadata",
        "/v1/models/{model}:predict",
        "/v1/models/{model}/versions/{version}:classify",
        "/v1/models/{model}/labels/{label}:regress",
    ):
        assert path in paths, path


def test_fastapi_twins_answer_like_the_fast_path(tmp_path: Path) -> None:
    """The documented FastAPI routes (used when the fast path is not in front) behave the same."""
    gateway = create_app(Settings(data_dir=tmp_path / "data"))
    with TestClient(gateway.app) as client:
        api = "/api/v1"
        assert client.post(f"{api}/models", json={"name": "double"}).status_code == 201
        files = {"file": ("model.onnx", double_onnx(), "application/octet-stream")}
        r = client.post(f"{api}/models/double/versions", files=files, data={"format": "onnx"})
        assert r.status_code == 201, r.text
        deploy = {"name": "double", "model": "double@1"}
        assert client.post(f"{api}/deployments", json=deploy).status_code == 201
        deadline = time.monotonic() + 60
        while client.get(f"{api}/deployments/double").json()["state"] != "ready":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        body = {"instances": ROWS}
        for path in ("", "/versions/1"):
            r = client.post(f"/v1/models/double{path}:predict", json=body)
            assert ok(r) == {"predictions": DOUBLED}
        assert "version 2" in error(
            client.post("/v1/models/double/versions/2:predict", json=body), 404
        )
        assert "nosuch" in error(client.post("/v1/models/nosuch:regress", json=body), 404)
        assert "Regress API" in error(client.post("/v1/models/double:regress", json=body), 400)
