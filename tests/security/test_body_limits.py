"""Body limits: management JSON over ``max_json_bytes`` is 413, JSON nested deeper than
``max_json_depth`` is 400 on every route and protocol, uploads keep their own caps, and the
depth check is exact (brackets in strings, escapes and OIP binary tensors do not count)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.api.limits import has_nul, json_part, too_deep
from modelplane.examples import double_onnx
from modelplane.settings import Settings
from tests.conftest import LiveServer
from tests.security.helpers import settle

MAX_JSON = 4096
DEPTH = 64
DEEP_MESSAGE = f"nested deeper than {DEPTH} levels"


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def nested(levels: int, noise: bool = False) -> Any:
    """A list ``levels`` deep; with ``noise``, siblings full of strings that look like JSON."""
    root: list[Any] = []
    cur = root
    for _ in range(levels - 1):
        child: list[Any] = []
        cur.extend([child, 1.5, {"k": '"]]}\\"[[{', "n": "\\", "z": None}] if noise else [child])
        cur = child
    return root


# -- the check itself ----------------------------------------------------------------
@pytest.mark.parametrize("noise", [False, True])
@pytest.mark.parametrize("levels", [1, 2, 3, 5, 6, 60, 63, 64, 65, 66, 70, 250])
def test_depth_is_exact_around_the_limit(levels: int, noise: bool) -> None:
    doc = nested(levels, noise)
    assert depth(doc) == levels
    assert too_deep(orjson.dumps(doc), DEPTH) is (levels > DEPTH)
    assert too_deep(json.dumps(doc, indent=1).encode(), DEPTH) is (levels > DEPTH)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text('[]{}"\\ ab'),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text('[]{}"\\k'), inner, max_size=4)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values, limit=st.integers(0, 8))
def test_depth_matches_the_parsed_document(value: Any, limit: int) -> None:
    assert too_deep(json.dumps(value).encode(), limit) is (depth(value) > limit)


def test_rows_of_numbers_and_text_with_brackets_are_not_deep() -> None:
    rows = orjson.dumps({"instances": [[[[0.5] * 3] * 8] * 8] * 4})  # images: depth 5
    assert not too_deep(rows, DEPTH)
    texts = orjson.dumps({"input": ["[" * 500 + "{" * 500] * 10})
    assert not too_deep(texts, DEPTH)


def test_only_the_json_header_of_a_binary_body_is_json() -> None:
    header = orjson.dumps({"inputs": []})
    body = header + b"[" * 1000
    assert too_deep(body, DEPTH)
    headers = {b"inference-header-content-length": str(len(header)).encode()}
    assert json_part(body, headers) == header and not too_deep(json_part(body, headers), DEPTH)


# -- on a running server -------------------------------------------------------------
@pytest.fixture
def srv(tmp_path: Path, start_server: Callable[[Settings], LiveServer]) -> LiveServer:
    s = Settings(data_dir=tmp_path / "data", job_slots=0, max_json_bytes=MAX_JSON)
    server = start_server(s)
    with httpx.Client(base_url=f"{server.url}/api/v1", timeout=60) as api:
        assert api.post("/models", json={"name": "double"}).status_code == 201
        files = {"file": ("d.onnx", double_onnx(), "application/octet-stream")}
        r = api.post("/models/double/versions", files=files, data={"format": "onnx"})
        assert r.status_code == 201, r.text
        body = {
            "name": "double",
            "model": "double@1",
            "max_batch_delay_ms": 0,
            "max_batch_size": 256,
        }
        assert api.post("/deployments", json=body).status_code == 201
        assert settle(api, "double", until=("ready",))["state"] == "ready"
    return server


@pytest.fixture
def http(srv: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        yield c


def _deep(levels: int, key: str = "x") -> bytes:
    """A JSON object ``levels`` deep in all."""
    return orjson.dumps({key: nested(levels - 1)})


MANAGEMENT = [
    ("POST", "/api/v1/models"),
    ("PATCH", "/api/v1/models/double"),
    ("POST", "/api/v1/deployments"),
    ("PATCH", "/api/v1/deployments/double"),
    ("PUT", "/api/v1/models/double/aliases/prod"),
    ("POST", "/api/v1/jobs"),
    ("POST", "/api/v1/tenants"),
    ("POST", "/v2/repository/models/double/load"),
]
INFERENCE = [
    "/v2/models/double/infer",
    "/v1/models/double:predict",
    "/v1/embeddings",
    "/v1/chat/completions",
    "/v1/completions",
]
JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(("method", "path"), MANAGEMENT)
def test_management_bodies_have_a_size_and_a_depth_cap(
    http: httpx.Client, method: str, path: str
) -> None:
    big = orjson.dumps({"description": "x" * MAX_JSON})
    r = http.request(method, path, content=big, headers=JSON)
    assert r.status_code == 413, r.text
    assert r.json() == {"error": f"request body exceeds {MAX_JSON} bytes"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"description": "'
        for _ in range(8):
            yield b"y" * 1024
        yield b'"}'

    r = http.request(method, path, content=chunks(), headers=JSON)
    assert r.status_code == 413, r.text

    r = http.request(method, path, content=_deep(DEPTH + 1), headers=JSON)
    assert r.status_code == 400 and DEEP_MESSAGE in r.json()["error"], r.text
    r = http.request(method, path, content=b"[" * 3000, headers=JSON)  # not even valid
    assert r.status_code == 400 and DEEP_MESSAGE in r.json()["error"], r.text
    # at the limit the body reaches the route, which judges its values
    r = http.request(method, path, content=_deep(DEPTH), headers=JSON)
    assert r.status_code != 500 and DEEP_MESSAGE not in r.text, r.text
    assert http.get("/healthz").status_code == 200


@pytest.mark.parametrize("path", INFERENCE)
def test_inference_json_has_a_depth_cap_in_each_protocols_shape(
    http: httpx.Client, path: str
) -> None:
    r = http.post(path, content=_deep(DEPTH + 1, "inputs"), headers=JSON)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    message = error["message"] if path.startswith(("/v1/e", "/v1/c")) else error
    assert DEEP_MESSAGE in message, r.text
    r = http.post(path, content=_deep(DEPTH, "inputs"), headers=JSON)
    assert r.status_code in (400, 404, 422) and DEEP_MESSAGE not in r.text, r.text


def test_ordinary_inference_still_works(http: httpx.Client) -> None:
    rows = [[float(i + j) for j in range(4)] for i in range(200)]  # 201 brackets
    r = http.post("/v1/models/double:predict", json={"instances": rows})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][7] == [2 * v for v in rows[7]]


def test_binary_tensor_bytes_are_not_read_as_json(http: httpx.Client) -> None:
    """OIP's binary extension: tensor bytes that happen to be all ``[`` are data."""
    data = np.frombuffer(b"[" * 1024, dtype=np.float32).reshape(64, 4)
    header = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [64, 4], "datatype": "FP32",
                     "parameters": {"binary_data_size": data.nbytes}}],
         "outputs": [{"name": "y", "parameters": {"binary_data": False}}]}
    )  # fmt: skip
    r = http.post(
        "/v2/models/double/infer",
        content=header + data.tobytes(),
        headers={"inference-header-content-length": str(len(header)), **JSON},
    )
    assert r.status_code == 200, r.text
    out = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32)
    assert np.allclose(out, (data * 2).ravel())


def test_uploads_are_not_held_to_the_json_cap(http: httpx.Client) -> None:
    csv = b"a,b\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(2000))
    assert len(csv) > MAX_JSON
    files = {"file": ("rows.csv", csv, "text/csv")}
    r = http.post("/api/v1/datasets", files=files, data={"name": "rows"})
    assert r.status_code == 201, r.text


def test_upload_metadata_has_the_depth_cap(http: httpx.Client) -> None:
    files = {"file": ("d.onnx", double_onnx(), "application/octet-stream")}
    deep = orjson.dumps({"format": "onnx", "tags": nested(DEPTH)}).decode()
    r = http.post("/api/v1/models/double/versions", files=files, data={"metadata": deep})
    assert r.status_code == 400 and f"metadata: request body is {DEEP_MESSAGE}" in r.text, r.text
    versions = http.get("/api/v1/models/double/versions").json()["versions"]
    assert [v["version"] for v in versions] == [1]  # nothing stored


@pytest.mark.parametrize(
    ("doc", "nul"),
    [
        (b'{"a": "x\\u0000y"}', True),
        (b'{"a": "x\\\\u0000y"}', False),  # a backslash, then the text u0000
        (b'{"a": "x\\\\\\u0000y"}', True),
        (b'{"a": "\x00"}', True),
        (b'{"a": "u0000 \\n"}', False),
    ],
)
def test_nul_detection_is_exact(doc: bytes, nul: bool) -> None:
    assert has_nul(doc) is nul
    if b"\x00" not in doc:  # (a raw NUL is not even valid JSON)
        assert ("\x00" in json.loads(doc)["a"]) is nul


def test_nul_characters_are_refused_in_management_input(http: httpx.Client) -> None:
    """PostgreSQL text cannot hold NUL: refused up front on every backend, never a 500."""
    for method, path, body in (
        ("POST", "/api/v1/models", {"name": "x", "description": "a\u0000b"}),
        ("PATCH", "/api/v1/models/double", {"tags": {"k": "\u0000"}}),
        ("POST", "/api/v1/tenants", {"name": "t", "description": "\u0000"}),
    ):
        r = http.request(method, path, json=body)
        assert r.status_code == 400 and "NUL character" in r.json()["error"], r.text
    for query in ("prefix=%00", "task=a%00", "tag=k%3D%00"):
        r = http.get(f"/api/v1/models?{query}")
        assert r.status_code == 400 and "query string" in r.json()["error"], r.text
    files = {"file": ("d.onnx", double_onnx(), "application/octet-stream")}
    r = http.post("/api/v1/models/double/versions", files=files, data={"description": "a\x00"})
    assert r.status_code == 400 and "upload form" in r.json()["error"], r.text
    csv = {"file": ("rows.csv", b"a\n1\n", "text/csv")}
    for data in ({"name": "r", "description": "a\x00"}, {"name": "r", "tags": '{"k": "\\u0000"}'}):
        r = http.post("/api/v1/datasets", files=csv, data=data)
        assert r.status_code == 400 and "upload form" in r.json()["error"], r.text
    assert http.get("/api/v1/datasets").json()["datasets"] == []
    # a backslash followed by the text "u0000" is fine
    r = http.patch("/api/v1/models/double", json={"description": "C:\\u0000"})
    assert r.status_code == 200 and r.json()["description"] == "C:\\u0000", r.text


def test_tag_filters_with_impossible_keys_are_422(http: httpx.Client) -> None:
    for tag in ("\x17\u00e2", "a b", "=v", "k" * 65):
        for path in ("/api/v1/models", "/api/v1/models/double/versions"):
            r = http.get(path, params={"tag": tag})
            assert r.status_code == 422 and "tag" in r.json()["error"], (path, tag, r.text)
    assert http.get("/api/v1/models", params={"tag": "k=v"}).json()["models"] == []
