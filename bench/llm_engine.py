"""The continuous-batching engine in process vs ``model.generate()``, on one tiny causal LM.

For 1, 4 and 8 concurrent sequences of ``max_tokens`` new tokens each, aggregate
tokens/s of:

- ``sequential``: ``model.generate()`` called once per prompt, one after another;
- ``static``: one left-padded ``generate()`` over all prompts (static batching);
- ``engine``: ``serving.scheduler.Engine`` with every prompt submitted at once,
  stepped until idle (time to first token measured per sequence).

EOS is switched off so that every method makes exactly the same number of
tokens. Ratios are taken in one run on the same loaded model; ``bench/llm``
uses ``measure`` for the in-process side of its report.

    python -m bench.llm_engine [MODEL_DIR]   # default: the tiny trained GPT-2 of tests/llm
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from modelplane.runtimes import RuntimeOptions
from modelplane.runtimes.generation import GenerationRuntime, SamplingParams
from modelplane.serving.scheduler import Engine

PROMPTS = [
    "the cat sat",
    "one two three",
    "red green",
    "monday tuesday wednesday",
    "alpha",
    "the dog ran in the park",
    "héllo wörld",
    "one",
]


def _load(model_dir: Path, threads: int) -> GenerationRuntime:
    rt = GenerationRuntime.load(model_dir, RuntimeOptions(intra_op_threads=threads))
    rt.eos_ids = frozenset()  # every method makes exactly max_tokens tokens
    rt.model.generation_config.eos_token_id = None
    return rt


def _sequential(rt: GenerationRuntime, prompts: list[list[int]], n: int) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for ids in prompts:
            rt.model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)
    return time.perf_counter() - start


def _static(rt: GenerationRuntime, prompts: list[list[int]], n: int) -> float:
    start = time.perf_counter()
    rt.complete(prompts, max_tokens=n)
    return time.perf_counter() - start


def _engine(rt: GenerationRuntime, prompts: list[list[int]], n: int) -> tuple[float, list[float]]:
    engine = Engine(rt, max_seqs=len(prompts))
    params = SamplingParams(max_tokens=n)
    start = time.perf_counter()
    for i, ids in enumerate(prompts):
        engine.add(i, ids, params)
    first: dict[int, float] = {}
    made = 0
    while engine.busy:
        for event in engine.step():
            made += len(event.tokens)
            if event.tokens and event.rid not in first:
                first[event.rid] = time.perf_counter() - start
    took = time.perf_counter() - start
    assert made == n * len(prompts), made
    return took, [first[i] for i in range(len(prompts))]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(
    model_dir: Path,
    streams: tuple[int, ...] = (1, 4, 8),
    max_tokens: int = 64,
    repeats: int = 5,
    threads: int = 1,
) -> dict[str, Any]:
    """Tokens/s per method and stream count (best of ``repeats``), ratios, TTFT at the most."""
    rt = _load(model_dir, threads)
    encoded = [rt.prompt_ids({"prompt": p}) for p in PROMPTS]
    _engine(rt, encoded[:2], 4)  # warm up every path once
    _sequential(rt, encoded[:1], 4)
    results: dict[str, Any] = {"max_tokens": max_tokens, "threads": threads, "streams": {}}
    for s in streams:
        prompts = [encoded[i % len(encoded)] for i in range(s)]
        tokens = s * max_tokens
        seq, stat, eng, ttft = [], [], [], []
        for _ in range(repeats):  # interleaved, so load changes hit every method alike
            seq.append(_sequential(rt, prompts, max_tokens))
            stat.append(_static(rt, prompts, max_tokens))
            took, firsts = _engine(rt, prompts, max_tokens)
            eng.append(took)
            ttft.extend(firsts)
        row = {
            "sequential_tok_s": tokens / min(seq),
            "static_tok_s": tokens / min(stat),
            "engine_tok_s": tokens / min(eng),
            "engine_vs_sequential": min(seq) / min(eng),
            "engine_vs_static": min(stat) / min(eng),
            "ttft_p50_ms": 1000 * statistics.median(ttft),
            "ttft_p99_ms": 1000 * _percentile(ttft, 0.99),
        }
        results["streams"][str(s)] = row
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m bench.llm_engine [MODEL_DIR]``; prints and returns the figures."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args:
        results = measure(Path(args[0]))
    else:
        from tests.llm.tiny import build

        with tempfile.TemporaryDirectory() as tmp:
            results = measure(build("gpt2", Path(tmp) / "gpt2"))
    print(json.dumps(results, indent=2))
    from bench.registry import write_json

    write_json(Path(__file__).parent / "results" / "llm_engine.json", results)
    return results


if __name__ == "__main__":
    main()
