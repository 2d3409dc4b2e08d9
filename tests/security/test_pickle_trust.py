"""Pickle-based models: stored on upload, never unpickled until an admin marks them trusted."""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from modelplane.api.models import check_may_set_trust
from modelplane.errors import Forbidden, InvalidInput
from modelplane.runtimes import RuntimeOptions, runtime_class
from modelplane.runtimes.pickle import scan_pickle
from modelplane.settings import Settings
from tests.conftest import LiveServer
from tests.security.helpers import api, infer, make_settings, settle, upload


class CreatesAFile:
    """Unpickling this opens (creates) ``path``: what a malicious pickle could do instead."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def iris_model() -> tuple[LogisticRegression, np.ndarray]:
    x, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=1000).fit(x, y), x[::30]


def joblib_bytes(obj: Any, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    joblib.dump(obj, buf, **kwargs)
    return buf.getvalue()


def test_untrusted_pickles_are_stored_but_never_run(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(CreatesAFile(marker))
    srv = start_server(make_settings(tmp_path / "data", None))
    with api(srv.url) as c:
        v = upload(c, "evil", payload, "model.pkl", "pickle")
        assert v["format"] == "pickle"
        assert c.get("/models/evil").json()["trusted"] is False
        assert not marker.exists()  # the upload check only walked the opcodes

        r = c.post("/deployments", json={"name": "evil", "model": "evil"})
        assert r.status_code == 201, r.text
        s = settle(c, "evil")
        assert s["state"] == "failed", s
        assert "not trusted" in s["reason"] and "io.open" in s["reason"], s
        assert not marker.exists()  # nothing was unpickled


def test_a_trusted_sklearn_pickle_loads_and_serves(
    tmp_path: Path,
    start_server: Callable[[Settings], LiveServer],
    iris_model: tuple[LogisticRegression, np.ndarray],
) -> None:
    model, x = iris_model
    srv = start_server(make_settings(tmp_path / "data", None))
    with api(srv.url) as c:
        upload(c, "iris", pickle.dumps(model), "iris.pkl", "pickle")
        upload(c, "iris-joblib", joblib_bytes(model, compress=3), "iris.joblib", "pickle")
        for name in ("iris", "iris-joblib"):
            assert c.post("/deployments", json={"name": name, "model": name}).status_code == 201
            s = settle(c, name)
            assert s["state"] == "failed" and "trusted" in s["reason"], s

            r = c.patch(f"/models/{name}", json={"trusted": True})
            assert r.status_code == 200 and r.json()["trusted"] is True, r.text
            assert c.patch(f"/deployments/{name}", json={}).status_code == 200  # retry the load
            s = settle(c, name, until=("ready",))
            assert s["state"] == "ready", s
            out = infer(srv.url, name, x.tolist(), "input", dtype="FP64")
            assert out["label"] == model.predict(x).tolist()
            assert np.allclose(out["probabilities"], model.predict_proba(x).ravel())

        r = c.patch("/models/iris", json={"trusted": False, "description": "revoked"})
        assert r.status_code == 200 and r.json()["trusted"] is False


def test_only_an_admin_may_change_trust() -> None:
    def call(role: str | None) -> None:
        state = SimpleNamespace(role=role) if role else SimpleNamespace()
        check_may_set_trust(SimpleNamespace(state=state))  # type: ignore[arg-type]

    call(None)  # auth off: the single user is the admin
    call("admin")
    for role in ("maintainer", "user", "viewer"):
        with pytest.raises(Forbidden, match="only an admin"):
            call(role)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"this is not a pickle at all", "not a pickle stream"),
        (b"", "not a pickle stream"),
        (pickle.dumps([1, 2, 3])[:-3], "not a pickle stream"),  # truncated
        (b"\x04\x22\x4d\x18" + b"\x00" * 20, "lz4"),
    ],
)
def test_the_upload_check_refuses_what_is_not_a_pickle(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "artifact.pkl"
    path.write_bytes(content)
    with pytest.raises(InvalidInput, match=problem):
        scan_pickle(path)


def test_torch_save_archives_are_not_accepted_as_pickles(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # a zip whose pickle torch.load would run
    with pytest.raises(InvalidInput, match="not a pickle stream"):
        scan_pickle(path)


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("bz2", 3), ("lzma", 3), ("xz", 3)])
def test_joblib_files_are_scanned_without_loading(
    tmp_path: Path, compress: Any, iris_model: tuple[LogisticRegression, np.ndarray]
) -> None:
    path = tmp_path / "model.joblib"
    path.write_bytes(joblib_bytes(iris_model[0], compress=compress))
    scan = scan_pickle(path)
    assert "sklearn.linear_model._logistic.LogisticRegression" in scan.globals
    assert "joblib.numpy_pickle.NumpyArrayWrapper" in scan.globals


def test_the_runtime_refuses_untrusted_and_loads_trusted(
    tmp_path: Path, iris_model: tuple[LogisticRegression, np.ndarray]
) -> None:
    model, x = iris_model
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "model.pkl").write_bytes(pickle.dumps(CreatesAFile(marker)))
    with pytest.raises(InvalidInput, match="not trusted"):
        runtime_class("pickle").load(evil, RuntimeOptions())
    assert not marker.exists()

    good = tmp_path / "good"
    good.mkdir()
    (good / "model.pkl").write_bytes(pickle.dumps(model))
    with pytest.raises(InvalidInput, match="not trusted"):
        runtime_class("pickle").load(good, RuntimeOptions())
    rt = runtime_class("pickle").load(good, RuntimeOptions(trusted=True))
    assert rt.predict({"input": x})["label"].tolist() == model.predict(x).tolist()
