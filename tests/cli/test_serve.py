"""``modelplane serve --example``, ``db upgrade`` and ``--version`` as real subprocesses."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import modelplane
from modelplane import Client
from modelplane.settings import Settings
from tests.conftest import ServerProcess


def run_module(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODELPLANE_")}
    return subprocess.run(
        [sys.executable, "-m", "modelplane", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def stop(sp: ServerProcess) -> None:
    sp.proc.terminate()
    sp.proc.wait(timeout=30)


@pytest.mark.slow  # two server starts
def test_example_model_is_registered_once(
    settings: Settings, spawn_server: Callable[..., ServerProcess]
) -> None:
    first = spawn_server(settings, "--example")
    with Client(first.url) as c:
        v = c.get_version("double@production")
        assert (v.model, v.version, v.format, v.aliases) == ("double", 1, "onnx", ["production"])
        assert [(t.name, t.dtype, t.shape) for t in v.signature.inputs] == [
            ("x", "float32", [-1, 4])
        ]
        assert [(t.name, t.dtype, t.shape) for t in v.signature.outputs] == [
            ("y", "float32", [-1, 4])
        ]
    stop(first)

    second = spawn_server(settings, "--example")
    with Client(second.url) as c:
        assert [v.version for v in c.list_versions("double")] == [1]
        assert [(a.alias, a.version) for a in c.list_aliases("double")] == [("production", 1)]
        assert [m.name for m in c.list_models()] == ["double"]


def test_serve_without_example_registers_nothing(
    settings: Settings, spawn_server: Callable[..., ServerProcess]
) -> None:
    sp = spawn_server(settings)
    with Client(sp.url) as c:
        assert list(c.list_models()) == []


def test_db_upgrade_creates_the_database(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "state"

    proc = run_module("db", "upgrade", cwd=tmp_path, MODELPLANE_DATA_DIR=str(data))
    assert proc.returncode == 0, proc.stderr
    assert "database is up to date" in proc.stdout
    db = data / "modelplane.db"
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    assert {"models", "model_versions", "aliases"} <= tables

    again = run_module("db", "upgrade", cwd=tmp_path, MODELPLANE_DATA_DIR=str(data))
    assert again.returncode == 0, again.stderr


def test_version_flag_prints_the_version(tmp_path: Path) -> None:
    proc = run_module("--version", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.strip() == modelplane.__version__
