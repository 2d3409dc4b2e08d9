"""The ``modelplane`` CLI against a real server: in process (CliRunner) and as a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from modelplane.cli.main import app
from modelplane.errors import NotFound
from tests.conftest import LiveServer

runner = CliRunner()


def invoke(server: LiveServer, *args: str, input: str | None = None) -> Result:
    return runner.invoke(app, ["--url", server.url, *args], input=input)


def ok(server: LiveServer, *args: str) -> str:
    """Run a command that must succeed; returns its stdout."""
    result = invoke(server, *args)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.stdout


def js(server: LiveServer, *args: str) -> Any:
    return json.loads(ok(server, "--json", *args))


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m modelplane ARGS``: the real entry point, with its error handling."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPLANE_")}
    return subprocess.run(
        [sys.executable, "-m", "modelplane", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def flat(text: str) -> str:
    """Rich wraps long lines at the terminal width; compare messages without it."""
    return " ".join(text.split())


@pytest.fixture
def onnx_file(tmp_path: Path, onnx_bytes: bytes) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_bytes)
    return path


def upload(server: LiveServer, model: str, path: Path, *extra: str) -> dict[str, Any]:
    result: dict[str, Any] = js(
        server, "versions", "upload", model, str(path), "-f", "onnx", *extra
    )
    return result


# -- models ------------------------------------------------------------------------
def test_models_create_list_show_update_delete(server: LiveServer) -> None:
    out = ok(
        server, "models", "create", "resnet", "--description", "classifier", "--task", "vision"
    )
    assert out.strip() == "created model resnet"
    made = js(server, "models", "create", "bert", "--tag", "team=nlp", "--tag", "tier=1")
    assert made["tags"] == {"team": "nlp", "tier": "1"}

    assert [m["name"] for m in js(server, "models", "list")] == ["bert", "resnet"]
    assert [m["name"] for m in js(server, "models", "list", "--task", "vision")] == ["resnet"]
    assert [m["name"] for m in js(server, "models", "list", "--tag", "team=nlp")] == ["bert"]
    assert "resnet" in ok(server, "models", "list")  # the table for people

    shown = js(server, "models", "show", "resnet")
    assert (shown["description"], shown["task"], shown["latest_version"]) == (
        "classifier",
        "vision",
        None,
    )

    out = ok(server, "models", "update", "bert", "--description", "encoder", "--remove-tag", "tier")
    assert out.strip() == "updated model bert"
    shown = js(server, "models", "show", "bert")
    assert (shown["description"], shown["tags"]) == ("encoder", {"team": "nlp"})

    refused = invoke(server, "models", "delete", "bert", input="n\n")
    assert refused.exit_code != 0
    assert js(server, "models", "show", "bert")["name"] == "bert"

    assert ok(server, "models", "delete", "bert", "--yes").strip() == "deleted model bert"
    assert [m["name"] for m in js(server, "models", "list")] == ["resnet"]


# -- versions ------------------------------------------------------------------------
def test_versions_upload_show_list_update_download_delete(
    server: LiveServer, onnx_file: Path, onnx_bytes: bytes, tmp_path: Path
) -> None:
    ok(server, "models", "create", "base")
    ok(server, "models", "create", "m")
    out = ok(server, "versions", "upload", "base", str(onnx_file), "-f", "onnx")
    assert out.startswith("uploaded base@1 (sha256 ")

    v = upload(
        server,
        "m",
        onnx_file,
        "--metric",
        "acc=0.9",
        "--tag",
        "stage=dev",
        "--param",
        "lr=0.01",
        "--parent",
        "base@1",
        "--source",
        "git=abc123",
        "--description",
        "first",
    )
    assert (v["model"], v["version"], v["format"]) == ("m", 1, "onnx")
    assert v["metrics"] == {"acc": 0.9}
    assert v["tags"] == {"stage": "dev"}
    assert v["params"] == {"lr": "0.01"}
    assert v["parents"] == ["base@1"]
    assert v["source"] == {"git": "abc123"}
    assert v["artifact"]["size"] == len(onnx_bytes)

    assert js(server, "versions", "show", "m@1") == v
    assert "float32" in ok(server, "versions", "show", "m@1")  # signature in the table
    upload(server, "m", onnx_file)
    assert [x["version"] for x in js(server, "versions", "list", "m")] == [2, 1]
    assert [x["version"] for x in js(server, "versions", "list", "m", "--tag", "stage")] == [1]

    updated = js(server, "versions", "update", "m@1", "--metric", "f1=0.8", "--tag", "ok=yes")
    assert updated["metrics"] == {"acc": 0.9, "f1": 0.8}
    assert updated["tags"] == {"stage": "dev", "ok": "yes"}

    lineage = js(server, "versions", "lineage", "base@1")
    assert [(n["model"], n["version"]) for n in lineage["descendants"]] == [("m", 1)]

    out_dir = tmp_path / "downloads"
    out_dir.mkdir()
    out = ok(server, "versions", "download", "m@1", "-o", str(out_dir))
    saved = out_dir / "m-v1-model.onnx"
    assert str(saved) in flat(out)
    assert saved.read_bytes() == onnx_bytes
    assert [p.name for p in out_dir.iterdir()] == [saved.name]

    assert ok(server, "versions", "delete", "m", "1", "--yes").strip() == "deleted m@1"
    assert [x["version"] for x in js(server, "versions", "list", "m")] == [2]


def test_bad_metric_is_refused_before_upload(server: LiveServer, onnx_file: Path) -> None:
    ok(server, "models", "create", "m")
    result = invoke(
        server, "versions", "upload", "m", str(onnx_file), "-f", "onnx", "--metric", "acc=abc"
    )
    assert result.exit_code != 0
    assert "'abc' is not a number" in flat(result.output)
    assert js(server, "versions", "list", "m") == []


# -- aliases -----------------------------------------------------------------------
def test_aliases_set_list_rollback_history_delete(server: LiveServer, onnx_file: Path) -> None:
    ok(server, "models", "create", "m")
    for _ in range(2):
        upload(server, "m", onnx_file)

    assert ok(server, "aliases", "set", "m", "production", "1").strip() == "m@production -> 1"
    assert js(server, "aliases", "set", "m", "production", "2")["version"] == 2
    listed = js(server, "aliases", "list", "m")
    assert [(a["alias"], a["version"]) for a in listed] == [("production", 2)]

    out = ok(server, "aliases", "rollback", "m", "production")
    assert out.strip() == "m@production -> 1 (rolled back)"
    assert js(server, "resolve", "m@production")["version"] == 1

    history = js(server, "aliases", "history", "m", "production")
    assert [(e["action"], e["to_version"]) for e in history] == [
        ("rollback", 1),
        ("move", 2),
        ("set", 1),
    ]

    assert ok(server, "aliases", "delete", "m", "production").strip() == (
        "deleted alias m@production"
    )
    assert js(server, "aliases", "list", "m") == []
    assert js(server, "aliases", "history", "m")[0]["action"] == "delete"


def test_resolve(server: LiveServer, onnx_file: Path) -> None:
    ok(server, "models", "create", "m")
    for _ in range(2):
        upload(server, "m", onnx_file)
    ok(server, "aliases", "set", "m", "production", "1")

    assert js(server, "resolve", "m")["version"] == 2
    assert js(server, "resolve", "m@2")["version"] == 2
    prod = js(server, "resolve", "m@production")
    assert (prod["version"], prod["aliases"]) == (1, ["production"])
    assert "m@1" in ok(server, "resolve", "m@production")


# -- errors ------------------------------------------------------------------------
def test_unknown_model_raises_not_found_in_process(server: LiveServer) -> None:
    result = invoke(server, "models", "show", "nope")
    assert result.exit_code != 0
    assert isinstance(result.exception, NotFound)
    assert result.exception.message == "model 'nope' not found"


def test_unknown_model_exits_with_message(server: LiveServer) -> None:
    proc = run_module("--url", server.url, "versions", "show", "nope@1")
    assert proc.returncode == 1
    assert "error (404): model 'nope' not found" in flat(proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_invalid_name_exits_with_server_message(server: LiveServer) -> None:
    proc = run_module("--url", server.url, "models", "create", "Bad")
    assert proc.returncode == 1
    assert "error (422):" in proc.stderr
    assert "invalid model name 'Bad'" in flat(proc.stderr)


def test_unreachable_server_exits_with_message() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, never listening
        proc = run_module("--url", url, "models", "list")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "error" in proc.stderr


@pytest.mark.parametrize("name", ["[/]", "[bold]x"])
def test_error_message_is_printed_verbatim(server: LiveServer, name: str) -> None:
    proc = run_module("--url", server.url, "models", "create", name)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"invalid model name '{name}'" in flat(proc.stderr)
