"""Marking a model trusted: admins only, from the CLI and the SDK; a deployment that failed
because its pickle model was not trusted loads by itself once the model is trusted."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from modelplane import Client
from modelplane.cli.main import app
from modelplane.errors import Forbidden
from modelplane.settings import Settings
from tests.auth.conftest import Realm, bearer, wait_state
from tests.conftest import ServerProcess

runner = CliRunner()


def test_an_admin_trusts_a_model_from_the_cli_and_its_failed_deployment_loads(
    realm: Realm,
) -> None:
    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x, y)
    realm.tenant("a")
    maintainer, admin = realm.key("a", "maintainer"), realm.key("a", "admin")
    with realm.client(maintainer) as api:
        assert api.post("/models", json={"name": "iris"}).status_code == 201
        files = {"file": ("iris.pkl", pickle.dumps(model), "application/octet-stream")}
        r = api.post("/models/iris/versions", files=files, data={"format": "pickle"})
        assert r.status_code == 201, r.text
        assert api.post("/deployments", json={"name": "iris", "model": "iris"}).status_code == 201
        failed = wait_state(api, "iris", "failed")
        assert "trusted" in failed["reason"], failed

        env = {"MODELPLANE_URL": realm.url, "MODELPLANE_API_KEY": maintainer}
        result = runner.invoke(app, ["models", "update", "iris", "--trusted"], env=env)
        assert result.exit_code != 0 and getattr(result.exception, "status", None) == 403
        assert api.get("/models/iris").json()["trusted"] is False

        env["MODELPLANE_API_KEY"] = admin
        result = runner.invoke(app, ["models", "update", "iris", "--trusted"], env=env)
        assert result.exit_code == 0, result.output
        assert "(trusted)" in result.stdout
        # no PATCH of the deployment: the trust change itself retries the failed load
        ready = wait_state(api, "iris", "ready")
        assert ready["version"] == 1
        body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP64",
                            "data": x[:2].ravel().tolist()}]}  # fmt: skip
        with httpx.Client(base_url=realm.url, headers=bearer(maintainer), timeout=60) as c:
            r = c.post("/v2/models/iris/infer", json=body)
        assert r.status_code == 200, r.text
        labels = next(o for o in r.json()["outputs"] if o["name"] == "label")["data"]
        assert labels == model.predict(x[:2]).tolist()

        shown = runner.invoke(app, ["--json", "models", "show", "iris"], env=env)
        assert json.loads(shown.stdout)["trusted"] is True

    with Client(realm.url, api_key=admin) as sdk:
        assert sdk.update_model("iris", trusted=False).trusted is False
        assert sdk.get_model("iris").trusted is False
    with Client(realm.url, api_key=maintainer) as sdk, pytest.raises(Forbidden, match="admin"):
        sdk.update_model("iris", trusted=True)


def test_a_deployment_in_another_server_process_loads_once_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spawn_server: Callable[..., ServerProcess]
) -> None:
    """Two server processes on one database: trust set through one reaches the other."""
    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x, y)
    monkeypatch.setenv("MODELPLANE_ALIAS_POLL_SECONDS", "0.3")
    monkeypatch.setenv("MODELPLANE_JOB_SLOTS", "0")
    settings = Settings(data_dir=tmp_path / "data")
    first = spawn_server(settings)
    with httpx.Client(base_url=f"{first.url}/api/v1", timeout=60) as a:
        assert a.post("/models", json={"name": "iris"}).status_code == 201
        files = {"file": ("iris.pkl", pickle.dumps(model), "application/octet-stream")}
        assert a.post("/models/iris/versions", files=files, data={"format": "pickle"}).is_success
        assert a.post("/deployments", json={"name": "iris", "model": "iris"}).status_code == 201
        wait_state(a, "iris", "failed")
        second = spawn_server(settings)
        with httpx.Client(base_url=f"{second.url}/api/v1", timeout=60) as b:
            assert "trusted" in wait_state(b, "iris", "failed")["reason"]
            assert a.patch("/models/iris", json={"trusted": True}).status_code == 200
            assert wait_state(b, "iris", "ready")["version"] == 1  # no PATCH of the deployment
            assert wait_state(a, "iris", "ready")["version"] == 1
