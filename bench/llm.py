"""LLM serving: aggregate tokens/s over HTTP at 1, 4 and 8 concurrent streams vs in process.

``python -m bench llm [--quick] [--threads N] [--tokens N] [--out PATH]``; writes
``bench/results/llm.json``.

The model is a GPT-2 made from a config (random weights, a byte-level BPE tokenizer
trained on the fly; nothing is downloaded) whose end-of-text logit is pinned to 0,
so every sequence runs to ``max_tokens`` and every run counts the same tokens.

- in process, sequential: ``model.generate()`` (greedy, KV cache) on one prompt
  after another, torch with ``--threads`` threads;
- in process, static batching: ``model.generate()`` on a left-padded batch of 8;
- served: ``modelplane serve`` in a child process, one worker with the same threads,
  ``max_batch_size`` 8 (continuous batching); 1, 4 and 8 clients each stream
  ``/v1/completions`` requests (SSE) one after another. Time to first token
  (request sent → first text chunk) p50/p99 at 8 streams.

The in-process runs bracket the served ones and their mean is used, so drift in the
machine's load between runs hurts the ratios less. Ratios are printed from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.serving_servers import modelplane

RESULTS = Path(__file__).parent / "results"
CORPUS = [
    "the quick brown fox jumps over the lazy dog.",
    "one two three four five six seven eight nine ten.",
    "a model as a service serves many users at once.",
    "continuous batching lets new requests join between steps.",
]
PROMPTS = [f"{line} {i}" for i, line in enumerate(CORPUS * 4)]
STREAMS = (1, 4, 8)


@dataclass(frozen=True)
class Size:
    layers: int
    width: int
    tokens: int  # max_tokens per request
    requests: int  # per stream, one after another


FULL = Size(layers=4, width=256, tokens=64, requests=4)
QUICK = Size(layers=2, width=64, tokens=8, requests=1)


def build_model(dst: Path, size: Size) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    eos_token = "<|endoftext|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000, special_tokens=[eos_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(CORPUS * 50, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=eos_token, pad_token=eos_token, unk_token=eos_token
    )
    eos = fast.convert_tokens_to_ids(eos_token)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(fast), n_positions=512, n_embd=size.width, n_layer=size.layers,
        n_head=4, bos_token_id=eos, eos_token_id=eos,
    )  # fmt: skip
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.transformer.wte.weight[eos].zero_()  # tied head: EOS never wins, runs are equal
    model.generation_config.pad_token_id = eos
    model.save_pretrained(dst)
    fast.save_pretrained(dst)
    return dst


# -- in process ----------------------------------------------------------------------
def inprocess(folder: Path, size: Size, threads: int, batch: int) -> dict[str, float]:
    """Greedy ``generate()`` on PROMPTS, one at a time (batch 1) or in padded batches."""
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    model = GPT2LMHeadModel.from_pretrained(folder).eval()
    prompts = PROMPTS[: max(batch, 8)]
    with torch.inference_mode():
        enc = tok(prompts[:batch], return_tensors="pt", padding=True)
        model.generate(**enc, max_new_tokens=2, min_new_tokens=2, do_sample=False)  # warm up
        made = 0
        started = time.perf_counter()
        for i in range(0, len(prompts), batch):
            enc = tok(prompts[i : i + batch], return_tensors="pt", padding=True)
            out = model.generate(
                **enc, max_new_tokens=size.tokens, min_new_tokens=size.tokens, do_sample=False
            )
            made += (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
        wall = time.perf_counter() - started
    return {"tokens": made, "seconds": round(wall, 4), "tokens_per_s": round(made / wall, 1)}


# -- served --------------------------------------------------------------------------
async def _one(client: httpx.AsyncClient, prompt: str, tokens: int) -> tuple[float, int, float]:
    """(time to first token, completion tokens, wall) of one streamed completion."""
    body = {
        "model": "llm", "prompt": prompt, "max_tokens": tokens, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True},
    }  # fmt: skip
    started = time.perf_counter()
    first: float | None = None
    made = 0
    async with client.stream("POST", "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(str(chunk["error"]))
            if first is None and any(c.get("text") for c in chunk.get("choices") or []):
                first = time.perf_counter() - started
            if chunk.get("usage"):
                made = int(chunk["usage"]["completion_tokens"])
    wall = time.perf_counter() - started
    return (first if first is not None else wall), made, wall


async def _streams(url: str, streams: int, size: Size) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=streams + 2)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await _one(client, PROMPTS[0], 2)  # warm up

        async def user(k: int) -> list[tuple[float, int, float]]:
            return [
                await _one(client, PROMPTS[(k + i) % len(PROMPTS)], size.tokens)
                for i in range(size.requests)
            ]

        started = time.perf_counter()
        results = [
            x for per in await asyncio.gather(*(user(k) for k in range(streams))) for x in per
        ]
        wall = time.perf_counter() - started
    made = sum(r[1] for r in results)
    ttft = sorted(r[0] * 1000 for r in results)
    return {
        "streams": streams,
        "requests": len(results),
        "tokens": made,
        "seconds": round(wall, 3),
        "tokens_per_s": round(made / wall, 1),
        "ttft_p50_ms": round(statistics.median(ttft), 1),
        "ttft_p99_ms": round(ttft[min(len(ttft) - 1, int(0.99 * len(ttft)))], 1),
    }


def served(folder: Path, size: Size, threads: int, tmp: Path) -> dict[int, dict[str, Any]]:
    from modelplane.client import Client

    with modelplane(tmp / "data", tmp / "server.log", example=False) as server:
        with Client(server.url, timeout=300) as c:
            c.create_model("llm", task="text-generation")
            c.upload_version("llm", folder, "transformers")
            c.deploy("llm", "llm", max_batch_size=8, threads=threads, max_queue=64)
            c.wait_ready("llm", timeout=300)
        out = {}
        for n in STREAMS:
            out[n] = asyncio.run(_streams(server.url, n, size))
            print(f"  served, {n} streams: {out[n]['tokens_per_s']} tokens/s", flush=True)
        return out


def report(result: dict[str, Any]) -> str:
    r, ratios = result, result["ratios"]
    seq, static = r["inprocess_sequential"], r["inprocess_static_batch8"]
    lines = [
        f"in process, sequential generate(): {seq['tokens_per_s']} tokens/s",
        f"in process, static batch of 8:      {static['tokens_per_s']} tokens/s",
    ]
    for n, row in r["served"].items():
        lines.append(
            f"served, {n} stream(s): {row['tokens_per_s']:>8} tokens/s   "
            f"TTFT p50 {row['ttft_p50_ms']} ms, p99 {row['ttft_p99_ms']} ms"
        )
    lines += [
        f"served 8 streams / sequential in process: {ratios['served8_over_sequential']:.2f}x "
        "(target >= 3x)",
        f"served 1 stream / sequential in process:  {ratios['served1_over_sequential']:.2f}x "
        "(target >= 0.9x)",
        f"served 8 streams / static batch of 8:      {ratios['served8_over_static8']:.2f}x",
        f"TTFT at 8 streams: p50 {r['served']['8']['ttft_p50_ms']} ms, "
        f"p99 {r['served']['8']['ttft_p99_ms']} ms",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench llm", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a tiny run (seconds): for smoke tests")
    p.add_argument("--threads", type=int, default=1, help="torch threads, in process and worker")
    p.add_argument("--tokens", type=int, default=None, help="max_tokens per request")
    p.add_argument("--out", type=Path, default=RESULTS / "llm.json")
    ns, _ = p.parse_known_args(argv)  # other benchmarks' options may be passed along
    return ns


def _mean(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    tokens, seconds = a["tokens"] + b["tokens"], a["seconds"] + b["seconds"]
    return {
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    size = QUICK if args.quick else FULL
    if args.tokens:
        size = Size(size.layers, size.width, args.tokens, size.requests)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-llm-") as tmp_name:
        tmp = Path(tmp_name)
        folder = build_model(tmp / "model", size)
        seq_before = inprocess(folder, size, args.threads, 1)
        static_before = inprocess(folder, size, args.threads, 8)
        print(f"  in process: sequential {seq_before['tokens_per_s']} tokens/s, "
              f"static batch 8 {static_before['tokens_per_s']} tokens/s", flush=True)  # fmt: skip
        over_http = served(folder, size, args.threads, tmp)
        seq_after = inprocess(folder, size, args.threads, 1)
        static_after = inprocess(folder, size, args.threads, 8)
    seq, static = _mean(seq_before, seq_after), _mean(static_before, static_after)
    rows = {str(n): row for n, row in over_http.items()}
    result: dict[str, Any] = {
        "benchmark": "llm",
        "config": {"quick": args.quick, "layers": size.layers, "width": size.width,
                   "max_tokens": size.tokens, "requests_per_stream": size.requests,
                   "threads": args.threads, "max_batch_size": 8},
        "environment": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "loadavg_1m_before": round(load_before, 2),
                        "loadavg_1m_after": round(os.getloadavg()[0], 2)},
        "inprocess_sequential": seq,
        "inprocess_sequential_runs": [seq_before, seq_after],
        "inprocess_static_batch8": static,
        "inprocess_static_batch8_runs": [static_before, static_after],
        "served": rows,
        "ratios": {
            "served8_over_sequential": round(rows["8"]["tokens_per_s"] / seq["tokens_per_s"], 2),
            "served4_over_sequential": round(rows["4"]["tokens_per_s"] / seq["tokens_per_s"], 2),
            "served1_over_sequential": round(rows["1"]["tokens_per_s"] / seq["tokens_per_s"], 2),
            "served8_over_static8": round(rows["8"]["tokens_per_s"] / static["tokens_per_s"], 2),
        },
    }  # fmt: skip
    result["target"] = {
        "served8_over_sequential_min": 3.0,
        "served1_over_sequential_min": 0.9,
        "pass": result["ratios"]["served8_over_sequential"] >= 3.0
        and result["ratios"]["served1_over_sequential"] >= 0.9,
    }
    print(report(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result
