"""Every path parameter of every route (read from ``/openapi.json``) refuses traversal: raw
and percent-encoded dots and slashes, double encoding, NUL, and unicode look-alikes. Sent
verbatim with ``http.client`` (httpx would resolve ``..`` before sending), as an admin with
auth on; each answer is a 4xx JSON error without a stack trace, and nothing is written."""

from __future__ import annotations

import http.client
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.auth.conftest import BOOTSTRAP, Realm

HOSTILE = [
    "..",
    ".",
    "%2e%2e",
    "%2E%2E%2Fetc",
    "..%2f..%2fetc%2fpasswd",
    "%252e%252e%252f",  # double encoded
    "a%5c..%5cb",  # backslashes
    "%00",
    "a%00b",
    "\u2024\u2024",  # one dot leaders
    "\uff0e\uff0e",  # fullwidth full stops
    "\u2215etc",  # division slash
    "\uff0fetc",  # fullwidth solidus
    "\u0430dmin",  # Cyrillic a
    "~",
    "x~..",
    "..~x",
    "a" * 300,
]
REFUSED = {400, 404, 405, 413, 422}
TRACE = re.compile(r"Traceback|File \"|line \d+, in ")


def call(port: int, method: str, path: str, body: bytes | None, kind: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Authorization": f"Bearer {BOOTSTRAP}", "Content-Type": kind}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def routes(realm: Realm) -> list[tuple[str, str, list[str]]]:
    spec: dict[str, Any] = realm.admin.get("/openapi.json").json()
    found: list[tuple[str, str, list[str]]] = []
    for path, ops in spec["paths"].items():
        params = re.findall(r"\{([^}]+)\}", path)
        if params:
            found.extend((method.upper(), path, params) for method in ops)
    return found


def body_for(method: str, path: str) -> tuple[bytes | None, str]:
    if method not in ("POST", "PUT", "PATCH"):
        return None, "application/json"
    if path.endswith("/versions") and method == "POST":  # an upload: a real multipart body
        b = "b0undary"
        part = (
            f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\nxx\r\n--{b}--\r\n"
        )
        return part.encode(), f"multipart/form-data; boundary={b}"
    return b"{}", "application/json"


def files_outside(root: Path, data: Path) -> set[Path]:
    return {p for p in root.rglob("*") if data not in p.parents and p != data}


def test_every_path_parameter_refuses_traversal(realm: Realm, tmp_path: Path) -> None:
    data = realm.server.settings.data_dir
    before = files_outside(tmp_path, data)
    table = routes(realm)
    assert len(table) > 40, "the route table looks incomplete"
    assert any(p == "/api/v1/models/{name}" for _, p, _ in table)
    port = realm.server.port
    problems: list[str] = []
    for method, template, params in table:
        body, kind = body_for(method, template)
        for value in HOSTILE:
            path = template
            for param in params:
                path = path.replace("{" + param + "}", value)
            wire = urllib.parse.quote(path, safe="/%~:@")  # non-ASCII goes out as UTF-8 %xx
            status, out = call(port, method, wire, body, kind)
            text = out.decode("utf-8", "replace")
            if status not in REFUSED or TRACE.search(text):
                problems.append(f"{method} {wire} -> {status} {text[:120]}")
                continue
            if status != 405:
                assert "error" in orjson.loads(out), (method, wire, text)
    assert problems == [], "\n".join(problems[:30])
    assert files_outside(tmp_path, data) == before
    blobs = data / "artifacts" / "blobs" / "sha256"
    assert not blobs.is_dir() or not any(blobs.rglob("*"))  # no upload got through
    assert realm.admin.get("/healthz").status_code == 200


@pytest.mark.parametrize("value", ["nosuch", "no.such-1"])
def test_plain_unknown_names_reach_the_route(realm: Realm, value: str) -> None:
    """The control: an ordinary unknown name is a 404 from the route, not a refusal."""
    status, out = call(realm.server.port, "GET", f"/api/v1/models/{value}", None, "x/y")
    assert status == 404 and value in orjson.loads(out)["error"]


BODY_NAMES: list[tuple[str, str, Callable[[str], dict[str, Any]]]] = [
    ("POST", "/api/v1/models", lambda v: {"name": v}),
    ("POST", "/api/v1/tenants", lambda v: {"name": v}),
    ("POST", "/api/v1/deployments", lambda v: {"name": v, "model": "double"}),
    ("POST", "/api/v1/deployments", lambda v: {"name": "d", "model": v}),
    ("POST", "/api/v1/keys", lambda v: {"tenant": v, "role": "user"}),
    ("POST", "/api/v1/models/double/grants", lambda v: {"tenant": v}),
    ("POST", "/api/v1/jobs", lambda v: {"kind": "batch_predict", "dataset": v, "model": "x"}),
    ("POST", "/api/v1/jobs", lambda v: {"kind": "batch_predict", "dataset": "x", "model": v}),
]


def test_names_in_bodies_refuse_traversal(realm: Realm) -> None:
    """Names given in JSON bodies (and the dataset upload form) follow the same rules."""
    api = realm.client(BOOTSTRAP)
    assert api.post("/models", json={"name": "double"}).status_code == 201
    for method, path, make in BODY_NAMES:
        for value in [urllib.parse.unquote(v) for v in HOSTILE] + ["a/b", "a\\b", "a\x00"]:
            r = api.request(method, path, json=make(value))
            assert r.status_code in REFUSED, (method, path, value, r.status_code, r.text)
            assert not TRACE.search(r.text)
    for value in ("../x", "..", "a/b", "\uff0e\uff0e"):
        files = {"file": ("rows.csv", b"a\n1\n", "text/csv")}
        r = api.post("/datasets", files=files, data={"name": value})
        assert r.status_code == 422, (value, r.text)
    assert [m["name"] for m in api.get("/models").json()["models"]] == ["double"]
    assert api.get("/deployments").json()["deployments"] == []
    assert api.get("/datasets").json()["datasets"] == []
    assert [t["name"] for t in api.get("/tenants").json()["tenants"]] == ["default"]
    api.close()
