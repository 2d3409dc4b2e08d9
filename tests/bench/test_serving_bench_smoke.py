"""Quick mode of the serving benchmark runs end to end for modelplane and writes its JSON.

No timing is asserted here: figures come from ``make bench``, never from unit tests.
MLServer is left out (it needs its own venv); wrk is used where installed, and the
httpx loop that stands in for it where not is run either way.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from bench.__main__ import BENCHES
from bench.__main__ import main as bench_main
from bench.serving_load import parse_wrk

ROW = {
    "tool",
    "connections",
    "seconds",
    "requests",
    "errors",
    "rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "loadavg_1m",
    "server_cpu_us_per_request",
    "rows_per_batch",
}
TARGETS = {
    "trivial_rps_vs_mlserver",
    "trivial_rps_per_cpu_vs_mlserver",
    "trivial_p99_vs_mlserver",
    "embeddings_vs_inprocess",
    "latency_overhead_p50_ms",
}
WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:8080/v2/models/double/infer
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms  812.00us  21.07ms   91.05%
    Req/Sec     3.89k   301.52     4.31k    80.00%
  Latency Distribution
     50%    1.98ms
     75%    2.21ms
     90%    2.60ms
     99%    5.12ms
  38745 requests in 10.00s, 9.20MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   3874.21
Transfer/sec:      0.92MB
"""


@pytest.mark.slow  # starts a server process: ~10 s on a quiet machine, 20+ s under load
@pytest.mark.parametrize("tool", ["wrk", "httpx"])
def test_serving_bench_quick_run_writes_results(
    tool: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if tool == "wrk" and shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (make bench installs it)")
    out = tmp_path / "serving.json"
    argv = ["serving", "--quick", "--parts", "trivial", "--servers", "modelplane"]
    argv += ["--duration", "1", "--warmup", "0.5", "--out", str(out)]
    if tool == "httpx":
        argv.append("--no-wrk")
    assert bench_main(argv) == 0

    result = json.loads(out.read_text())
    assert result["benchmark"] == "serving"
    assert result["quick"] is True
    trivial = result["trivial"]
    assert trivial["tool"] == tool
    label = trivial["default_label"]
    assert set(trivial["servers"]) == {label}  # modelplane alone
    assert set(trivial["example_default"]) == {"max_batch_size", "max_batch_delay_ms"}
    best = trivial["servers"][label]["best"]
    assert set(best) == ROW
    assert best["requests"] > 0
    assert best["errors"] == 0
    assert best["p50_ms"] <= best["p90_ms"] <= best["p99_ms"]
    assert trivial["servers"][label]["rounds"] == [best]
    assert "latency" not in trivial and "embeddings" not in result
    assert set(result["targets"]) == TARGETS
    assert result["targets"]["trivial_rps_vs_mlserver"]["pass"] is None  # no MLServer this run
    env = result["environment"]
    assert {"loadavg_1m_before", "loadavg_1m_after", "cpus", "pinned"} <= set(env)

    printed = capsys.readouterr().out
    assert "trivial model y = 2x" in printed
    assert "targets:" in printed
    assert not list(tmp_path.glob("*.tmp"))


def test_wrk_output_is_parsed() -> None:
    got = parse_wrk(WRK_OUTPUT)
    assert got["requests"] == 38745
    assert got["seconds"] == pytest.approx(10.0)
    assert got["rps"] == pytest.approx(3874.21)
    assert got["p50_ms"] == pytest.approx(1.98)
    assert got["p90_ms"] == pytest.approx(2.60)
    assert got["p99_ms"] == pytest.approx(5.12)
    assert got["errors"] == 3


def test_serving_is_a_registered_benchmark() -> None:
    assert {"serving", "ipc"} <= set(BENCHES)
