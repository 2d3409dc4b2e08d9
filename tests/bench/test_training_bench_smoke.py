"""Quick mode of the training benchmark runs end to end and writes the JSON it promises.

No timing is asserted here: figures come from ``make bench``, never from unit tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench.__main__ import BENCHES
from bench.__main__ import main as bench_main

OVERHEAD = {
    "bare_prepare_s",
    "bare_train_s",
    "bare_total_s",
    "bare_loop_s",
    "bare_cpu_s",
    "bare_val_loss",
    "job_submit_to_succeeded_s",
    "job_queue_s",
    "job_run_s",
    "job_loop_s",
    "job_cpu_s",
    "job_val_loss",
}


@pytest.mark.slow  # a server, a job process and two DDP workers: ~30 s quiet, minutes loaded
@pytest.mark.timeout(900)
def test_training_bench_quick_run_writes_results(tmp_path: Path) -> None:
    assert "training" in BENCHES
    out = tmp_path / "training.json"
    assert bench_main(["training", "--quick", "--out", str(out)]) == 0

    result = json.loads(out.read_text())
    assert result["benchmark"] == "training" and result["config"]["quick"] is True
    overhead = result["job_overhead"]
    assert len(overhead["runs"]) == 1 and set(overhead["median"]) == OVERHEAD
    for key in ("overhead_including", "overhead_job_run", "overhead_excluding", "overhead_cpu"):
        assert isinstance(overhead[key], float)
    # The same seed and data in process and as a job: the same model.
    assert overhead["median"]["job_val_loss"] == pytest.approx(
        overhead["median"]["bare_val_loss"], rel=1e-4
    )
    ddp = result["data_parallel"]
    assert {"1", "2", "1_seed1", "val_loss_diff", "val_loss_seed_spread"} <= set(ddp)
    assert ddp["1"]["epochs"] == ddp["2"]["epochs"] == result["config"]["epochs"]
    assert abs(ddp["val_loss_diff"]) < 1e-3  # same global batch: the same steps
    assert "loadavg_1m_before" in result["environment"]
