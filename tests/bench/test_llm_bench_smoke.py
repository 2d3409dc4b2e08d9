"""Quick mode of the LLM benchmark runs end to end and writes the JSON it promises.

No timing is asserted here: figures come from ``python -m bench llm``, never from unit tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench.__main__ import BENCHES
from bench.__main__ import main as bench_main

ROW = {"streams", "requests", "tokens", "seconds", "tokens_per_s", "ttft_p50_ms", "ttft_p99_ms"}


@pytest.mark.slow  # a server process and a worker: ~15 s quiet, a minute loaded
@pytest.mark.timeout(600)
def test_llm_bench_quick_run_writes_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "llm" in BENCHES
    out = tmp_path / "llm.json"
    assert bench_main(["llm", "--quick", "--out", str(out)]) == 0

    result = json.loads(out.read_text())
    assert result["benchmark"] == "llm" and result["config"]["quick"] is True
    tokens = result["config"]["max_tokens"]
    assert set(result["served"]) == {"1", "4", "8"}
    for n, row in result["served"].items():
        assert set(row) == ROW
        # every request runs to max_tokens: the model never emits end-of-text
        assert row["tokens"] == row["requests"] * tokens and row["streams"] == int(n)
        assert row["ttft_p50_ms"] <= row["ttft_p99_ms"]
    assert result["inprocess_sequential"]["tokens"] == 2 * 8 * tokens  # two bracketing runs
    assert result["inprocess_static_batch8"]["tokens"] == 2 * 8 * tokens
    assert set(result["ratios"]) == {
        "served8_over_sequential", "served4_over_sequential", "served1_over_sequential",
        "served8_over_static8",
    }  # fmt: skip
    assert isinstance(result["target"]["pass"], bool)
    printed = capsys.readouterr().out
    assert "served 8 streams / sequential in process" in printed and "TTFT" in printed
