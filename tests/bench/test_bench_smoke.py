"""The registry benchmark runs end to end at a tiny size and writes the JSON it promises.

No timing is asserted here: figures come from ``make bench``, never from unit tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench.__main__ import BENCHES
from bench.__main__ import main as bench_main

OPS = {"resolve-alias", "get-version", "list-versions", "list-models"}
STATS = {"p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms", "rps"}


@pytest.mark.slow  # starts a server process: ~6 s on a quiet machine, 12+ s under load
def test_registry_bench_tiny_run_writes_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "registry.json"
    argv = ["registry", "--models", "3", "--versions-per-model", "5", "--requests", "20"]
    assert bench_main([*argv, "--out", str(out)]) == 0

    result = json.loads(out.read_text())
    assert result["benchmark"] == "registry"
    assert result["config"]["versions"] == 15
    assert result["fill"]["alias_events"] == 3 * 12
    assert set(result["operations"]) == OPS
    for op in result["operations"].values():
        assert set(op["http"]) == STATS
        assert set(op["inprocess"]) == STATS
        assert op["http"]["p50_ms"] <= op["http"]["p95_ms"] <= op["http"]["p99_ms"]
        assert op["ratio_p50"] is not None
    assert set(result["http_floor_healthz"]) == STATS
    assert set(result["target"]["per_operation"]) == OPS
    assert "loadavg_1m_before" in result["environment"]
    assert isinstance(result["target"]["pass"], bool)

    printed = capsys.readouterr().out
    assert "resolve-alias" in printed
    assert "target p95 < 20 ms" in printed
    assert not list(tmp_path.glob("*.tmp"))


def test_unknown_benchmark_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert "registry" in BENCHES
    assert bench_main(["no-such-bench"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
