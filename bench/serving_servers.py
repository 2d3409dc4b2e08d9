"""The servers bench/serving.py starts, each a child process on a free loopback port.

- modelplane: ``python -m modelplane serve`` in a temp data dir (``--example`` registers
  and deploys ``double``, y = 2x on float32[batch, 4]).
- MLServer 1.7.1 at its best (see shared/PEERS.md): its own venv under
  ``bench/.venvs/mlserver`` (made once), ``parallel_workers: 0``, no metrics server,
  ``debug: false`` (no access log), a custom runtime running the same ONNX file.
- the bare-ASGI ceiling: ``bench/serving_bare.py``.

Every server runs in its own process group and is stopped on exit (terminate, then
kill, then whatever of its group is left), even when the benchmark fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

BENCH = Path(__file__).parent
ROOT = BENCH.parent
MLSERVER_VENV = BENCH / ".venvs" / "mlserver"
MLSERVER_PACKAGES = ["mlserver==1.7.1", "uvloop<0.22", "httptools", "onnxruntime", "numpy"]
INFER_PATH = "/v2/models/double/infer"
TRIVIAL_BODY = orjson.dumps(
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]}
)
EXPECTED = [2.0, 4.0, 6.0, 8.0]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Unavailable(Exception):
    """A peer cannot run here (not installed and not installable); ``str()`` says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(core: int | None) -> list[str]:
    """``taskset -c CORE`` when asked for, available, and the core exists."""
    if core is None or shutil.which("taskset") is None or core >= (os.cpu_count() or 1):
        return []
    return ["taskset", "-c", str(core)]


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def trivial_ok(url: str) -> bool:
    """The y = 2x model answers correctly at ``url`` (the readiness probe of every server)."""
    try:
        r = httpx.post(url + INFER_PATH, content=TRIVIAL_BODY, timeout=2,
                       headers={"content-type": "application/json"})  # fmt: skip
    except httpx.HTTPError:
        return False
    if r.status_code != 200:
        return False
    outputs = r.json().get("outputs") or [{}]
    return [float(v) for v in outputs[0].get("data", [])] == EXPECTED


def healthz_ok(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    return False


@dataclass(frozen=True)
class Served:
    """A running server: its URL and the id of its process group (its own pid)."""

    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by every live process of the server's group.

        Robust where requests/s are not: on a busy machine a server gets less of its core,
        but the CPU it spends per request barely moves.
        """
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue  # exited meanwhile
            if int(fields[2]) == self.pid:  # pgrp
                total += int(fields[11]) + int(fields[12])  # utime + stime, in ticks
        return total / CLOCK_TICKS


def stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """Terminate, then kill; then kill what is left of its process group (its workers)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group is ours: start_new_session below


@contextlib.contextmanager
def process(
    name: str,
    cmd: list[str],
    log_path: Path,
    ready: Callable[[], bool],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd``, wait until ``ready()``; stop it on exit whatever happened."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after {timeout:.0f} s:\n{tail(log_path)}")
            time.sleep(0.2)
        try:
            yield proc
        except BaseException:
            print(f"-- {name} log, last lines --\n{tail(log_path)}", file=sys.stderr, flush=True)
            raise
    finally:
        stop(proc)


# -- modelplane ----------------------------------------------------------------
@contextlib.contextmanager
def modelplane(
    data_dir: Path,
    log_path: Path,
    core: int | None = None,
    example: bool = True,
    log_level: str | None = None,
) -> Iterator[Served]:
    """``modelplane serve`` (pinned to ``core`` if given; its workers inherit the affinity)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPLANE_")}
    env["MODELPLANE_DATA_DIR"] = str(data_dir)
    if log_level:
        env["MODELPLANE_LOG_LEVEL"] = log_level
    cmd = [*pin(core), sys.executable, "-m", "modelplane", "serve"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), *(["--example"] if example else [])]
    probe = (lambda: trivial_ok(url)) if example else (lambda: healthz_ok(url))
    with process("modelplane", cmd, log_path, probe, env=env, timeout=180) as proc:
        yield Served(url, proc.pid)


# -- bare ASGI -----------------------------------------------------------------
@contextlib.contextmanager
def bare(log_path: Path, core: int | None = None) -> Iterator[Served]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [*pin(core), sys.executable, str(BENCH / "serving_bare.py"), str(port)]
    with process("bare ASGI", cmd, log_path, lambda: trivial_ok(url), timeout=60) as proc:
        yield Served(url, proc.pid)


# -- MLServer ------------------------------------------------------------------
def mlserver_venv(install: bool = True) -> Path:
    """The venv's ``mlserver`` script; created once (python3.11 -m venv + pip)."""
    script = MLSERVER_VENV / "bin" / "mlserver"
    stamp = MLSERVER_VENV / ".stamp"
    wanted = " ".join(MLSERVER_PACKAGES)
    if script.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return script
    if not install:
        raise Unavailable(f"no MLServer venv at {MLSERVER_VENV} (run without --no-install)")
    python = shutil.which("python3.11")
    if python is None:
        raise Unavailable("python3.11 not found: cannot make the MLServer venv")
    print(f"installing {wanted} into {MLSERVER_VENV} (once) ...", flush=True)
    pip = [str(MLSERVER_VENV / "bin" / "pip"), "install", "-q", "-c", str(ROOT / "constraints.txt")]
    try:
        subprocess.run([python, "-m", "venv", str(MLSERVER_VENV)], check=True, timeout=300)
        subprocess.run([*pip, *MLSERVER_PACKAGES], check=True, timeout=1200)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"installing MLServer failed: {exc}") from exc
    stamp.write_text(wanted + "\n")
    return script


def mlserver_version(script: Path) -> str:
    python = script.parent / "python"
    out = subprocess.run(
        [str(python), "-c", "import mlserver; print(mlserver.__version__)"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return out.stdout.strip() or "unknown"


def write_mlserver_repo(root: Path, onnx_bytes: bytes, port: int, grpc_port: int) -> Path:
    """settings.json and one model folder ``double`` with the runtime and the ONNX file."""
    root.mkdir(parents=True, exist_ok=True)
    settings = {
        "debug": False,  # no access log
        "parallel_workers": 0,  # predict in the server process: no inference-pool hop
        "metrics_endpoint": None,  # no metrics server, no metrics middleware
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": grpc_port,
    }
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    model = root / "double"
    model.mkdir(exist_ok=True)
    (model / "double.onnx").write_bytes(onnx_bytes)
    shutil.copyfile(BENCH / "serving_mlserver_model.py", model / "double_runtime.py")
    model_settings = {
        "name": "double",
        "implementation": "double_runtime.DoubleOnnx",
        "parameters": {"uri": "./double.onnx"},
    }
    (model / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    return root


@contextlib.contextmanager
def mlserver(
    script: Path, repo: Path, onnx_bytes: bytes, log_path: Path, core: int | None = None
) -> Iterator[Served]:
    port, grpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    write_mlserver_repo(repo, onnx_bytes, port, grpc_port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVER")}
    cmd = [*pin(core), str(script), "start", str(repo)]
    with process("MLServer", cmd, log_path, lambda: trivial_ok(url), env=env, cwd=repo) as proc:
        yield Served(url, proc.pid)
