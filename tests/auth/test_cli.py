"""``modelplane tenants|keys|grants|audit`` and ``serve``'s refusal to bind openly without auth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from modelplane.cli.main import app
from modelplane.settings import Settings
from tests.auth.conftest import Realm, auth_settings, bearer, publish_double, wait_for
from tests.conftest import LiveServer

runner = CliRunner()


def cli(*args: str, **env: str) -> str:
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.stdout


def cli_json(*args: str, **env: str) -> Any:
    return json.loads(cli("--json", *args, **env))


def test_first_admin_key_from_the_database(
    tmp_path: Path, start_server: Callable[[Settings], LiveServer]
) -> None:
    """No bootstrap key: ``keys create --role admin --local`` makes the first one."""
    settings = auth_settings(tmp_path, bootstrap_key=None)
    env = {"MODELPLANE_DATA_DIR": str(settings.data_dir)}
    made = cli_json("keys", "create", "--role", "admin", "--name", "root", "--local", **env)
    assert (made["tenant"], made["role"], made["name"]) == ("default", "admin", "root")
    cli("tenants", "create", "acme", "--local", **env)
    assert [t["name"] for t in cli_json("tenants", "list", "--local", **env)] == [
        "acme",
        "default",
    ]
    listed = cli_json("keys", "list", "--local", **env)
    assert [k["name"] for k in listed] == ["root"] and "key" not in listed[0]
    server = start_server(settings)
    with httpx.Client(base_url=server.url, headers=bearer(made["key"])) as c:
        assert c.get("/api/v1/tenants").status_code == 200
        audit = c.get("/api/v1/audit").json()["entries"]
    assert [e["action"] for e in audit] == ["POST /api/v1/tenants", "POST /api/v1/keys"]
    assert all(e["actor"].startswith("local:") and e["client"] == "cli" for e in audit)
    # plain text output prints the key once, with a warning
    result = runner.invoke(app, ["keys", "create", "--role", "user", "--local"], env=env)
    assert result.exit_code == 0 and "mp_" in result.stdout and "shown once" in result.output


def test_admin_commands_over_http(realm: Realm) -> None:
    env = {
        "MODELPLANE_URL": realm.url,
        "MODELPLANE_API_KEY": realm.admin.headers["authorization"][7:],
    }
    cli("tenants", "create", "acme", "--description", "ACME", **env)
    assert "acme" in cli("tenants", "list", **env)
    made = cli_json("keys", "create", "--tenant", "acme", "--role", "maintainer", "--name", "ci",
                    "--expires", "30d", **env)  # fmt: skip
    assert made["expires_at"] and made["key"].startswith("mp_")
    assert [k["name"] for k in cli_json("keys", "list", "--tenant", "acme", **env)] == ["ci"]
    q = cli_json("tenants", "set-quotas", "acme", "--max-jobs", "3", "--burst", "9", **env)
    assert (q["max_jobs"], q["configured"]["burst"], q["configured"]["max_concurrent"]) == (
        3,
        9,
        None,
    )
    assert q["burst"] == 0  # a burst without a rate limits nothing
    assert "server default" in cli("tenants", "quotas", "acme", **env)

    acme = {"MODELPLANE_URL": realm.url, "MODELPLANE_API_KEY": made["key"]}
    with realm.client(made["key"]) as api:
        publish_double(api)
    shared = cli_json("grants", "add", "model", "double", "beta", **acme)
    assert shared[0]["grantee"] == "beta"
    assert "acme~double" in cli("grants", "list", "model", "double", **acme)
    assert "acme~double" in cli("grants", "list", **acme)
    assert "no longer shared" in cli("grants", "revoke", "model", "double", "beta", **acme)

    revoked = cli_json("keys", "revoke", str(made["id"]), **env)
    assert revoked[0]["revoked_at"]
    assert cli_json("keys", "list", "--tenant", "acme", **env) == []
    assert len(cli_json("keys", "list", "--tenant", "acme", "--all", **env)) == 1
    revoke = "POST /api/v1/keys/{key_id}/revoke"
    assert wait_for(lambda: any(r["action"] == revoke for r in cli_json("audit", **env)))
    assert "audit log" in cli("audit", "--limit", "3", **env)
    rows = cli_json("audit", "--tenant", "acme", "--action", "POST /api/v1/models", **env)
    assert {r["target"] for r in rows} >= {"/api/v1/models", "/api/v1/models/double/grants"}
    # a non-admin key gets a clear refusal
    viewer = {"MODELPLANE_URL": realm.url, "MODELPLANE_API_KEY": realm.key("acme", "viewer")}
    result = runner.invoke(app, ["tenants", "list"], env=viewer)
    assert result.exit_code != 0 and getattr(result.exception, "status", None) == 403


def test_serve_refuses_an_open_bind_without_auth(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPLANE_")}
    env["MODELPLANE_DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-m", "modelplane", "serve", "--host", "0.0.0.0", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    message = " ".join(done.stderr.split())
    assert "refusing to listen on 0.0.0.0 without authentication" in message, done.stderr
    assert "MODELPLANE_AUTH=true" in message and "--insecure" in message
    assert not (tmp_path / "data").exists()  # refused before touching anything


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_binds_need_no_auth(host: str) -> None:
    from modelplane.cli.auth import refuse_open_bind

    refuse_open_bind(Settings(host=host), insecure=False)  # returns: nothing to refuse
    refuse_open_bind(Settings(host="0.0.0.0", auth=True), insecure=False)
    refuse_open_bind(Settings(host="0.0.0.0"), insecure=True)


def test_sdk_maps_auth_errors(realm: Realm) -> None:
    from modelplane import Client
    from modelplane.errors import Forbidden, Unauthorized

    realm.tenant("acme")
    with Client(realm.url, api_key="mp_000000000000_wrong") as c, pytest.raises(Unauthorized):
        list(c.list_models())
    with Client(realm.url, api_key=realm.key("acme", "viewer")) as c:
        assert list(c.list_models()) == []
        with pytest.raises(Forbidden, match="viewer"):
            list(c.list_tenants())
        with pytest.raises(Forbidden):
            c.create_model("nope")
    with Client(realm.url, api_key=realm.key("default", "admin")) as admin:
        assert [t.name for t in admin.list_tenants()] == ["acme", "default"]
        key = admin.create_key("acme", "user", "sdk", expires="1h")
        assert key.key.startswith(f"mp_{key.prefix}_") and key.expires_at is not None
        assert admin.get_quotas("acme").max_jobs == 0
        assert admin.set_quotas("acme", max_jobs=4).max_jobs == 4
        assert admin.revoke_key(key.id).revoked_at is not None
        assert [k.name for k in admin.list_keys("acme", include_revoked=True)] == [
            "acme-viewer",
            "sdk",
        ]
