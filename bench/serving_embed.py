"""Benchmark 2 of bench/serving.py: MiniLM embeddings served vs called in process.

The server (not pinned) serves all-MiniLM-L6-v2 as a ``transformers`` deployment to
``--concurrency`` httpx clients, one sentence per OIP v2 request (BYTES input), for
a few deployment settings. Each served run is bracketed by two in-process runs of
the same layout (one runtime with 2 threads, or two 1-thread runtimes in two
threads for a 2-worker deployment) at the best batch size found by a sweep, and is
compared with their mean: on a shared machine the load drifts by the minute, and
only figures taken side by side can be divided. CPU per sentence (the server's
gateway and workers vs this process) is given too; it moves far less with load.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from bench.serving_load import embed_load
from bench.serving_servers import Served, modelplane
from bench.serving_text import export_minilm, inprocess, load_runtime, sentences, token_counts
from modelplane.client import Client

THREADS = 2  # onnxruntime threads in all, in process and per deployment (2 cores)
# name -> deployment; the first is what `serve --example-embeddings` deploys.
CONFIGS: dict[str, dict[str, Any]] = {
    "b64-d2-t2": {"max_batch_size": 64, "max_batch_delay_ms": 2.0, "threads": 2},
    "b32-d2-t2": {"max_batch_size": 32, "max_batch_delay_ms": 2.0, "threads": 2},
    "b16-d2-t2": {"max_batch_size": 16, "max_batch_delay_ms": 2.0, "threads": 2},
    "b16-d2-2x1": {"max_batch_size": 16, "max_batch_delay_ms": 2.0, "threads": 1, "instances": 2},
}


def oip_body(text: str) -> bytes:
    doc = {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}],
        "outputs": [{"name": "embedding"}],
    }
    return orjson.dumps(doc)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def served_run(
    server: Served, client: Client, name: str, path: str, bodies: list[bytes], args: Any
) -> dict[str, Any]:
    """One run of the clients, with the server's CPU (gateway + workers) and batch sizes."""
    before, cpu = client.get_deployment(name), server.cpu_seconds()
    load = embed_load(server.url + path, bodies, args.concurrency, args.embed_duration, 200_000)
    row = dict(vars(load))
    used, after = server.cpu_seconds() - cpu, client.get_deployment(name)
    row["server_cpu_share"] = round(used / row["seconds"], 2)
    row["server_cpu_ms_per_sentence"] = round(used * 1000 / max(row["sentences"], 1), 2)
    batches = after.batches - before.batches
    row["rows_per_batch"] = round((after.batched_items - before.batched_items) / max(batches, 1), 1)
    return row


def _check(url: str, body: bytes, reference: np.ndarray) -> float:
    r = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
    if r.status_code != 200:
        raise RuntimeError(f"POST {url}: {r.status_code} {r.text[:300]}")
    got = np.array(r.json()["outputs"][0]["data"], dtype=np.float32)
    c = cosine(got, reference)
    if c < 0.999:
        raise RuntimeError(f"{url}: served embedding differs from in process (cosine {c:.4f})")
    return c


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several in-process runs of one batch size as one."""
    done = sum(r["sentences"] for r in runs)
    wall = sum(r["seconds"] for r in runs)
    cpu = sum(r["cpu_ms_per_sentence"] * r["sentences"] for r in runs)
    return {
        "batch": runs[0]["batch"],
        "sentences": done,
        "seconds": round(wall, 2),
        "sentences_per_s": round(done / wall, 1),
        "cpu_ms_per_sentence": round(cpu / max(done, 1), 2),
        "loadavg_1m": round(sum(r["loadavg_1m"] for r in runs) / len(runs), 2),
        "runs": [r["sentences_per_s"] for r in runs],
    }


def _print(label: str, row: dict[str, Any]) -> None:
    print(f"  {label:<34} {row['sentences_per_s']:>7.1f} sentences/s  "
          f"{row.get('server_cpu_ms_per_sentence', row.get('cpu_ms_per_sentence'))} "
          f"cpu-ms/sentence  load {row['loadavg_1m']}", flush=True)  # fmt: skip


def measure_embeddings(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    texts = sentences(args.sentences, seed=7)
    print("exporting MiniLM to ONNX ...", flush=True)
    model_dir = export_minilm(tmp / "minilm", tmp / "export.log")
    layouts: dict[tuple[int, int], list[Any]] = {(1, THREADS): [load_runtime(model_dir, THREADS)]}
    main = layouts[(1, THREADS)][0]
    counts = token_counts(main, texts[:512])
    reference = main.predict({"text": np.array(texts[:1], dtype=object)})["embedding"][0]
    out: dict[str, Any] = {
        "sentences": len(texts),
        "tokens_mean": round(float(np.mean(counts)), 1),
        "tokens_min": min(counts),
        "tokens_max": max(counts),
        "threads": THREADS,
        "concurrency": args.concurrency,
    }
    secs = args.embed_duration
    # Each batch size twice, in the order 8 16 32 64 64 32 16 8: a steady drift of the
    # machine's load then weighs on every batch size alike.
    runs: dict[int, list[dict[str, Any]]] = {}
    for batch in [*args.batch_sizes, *reversed(args.batch_sizes)]:
        runs.setdefault(batch, []).append(inprocess([main], texts, batch, secs / 2, 200_000))
        _print(f"in process 1x{THREADS} batch {batch}", runs[batch][-1])
    sweep = [_merge(runs[batch]) for batch in args.batch_sizes]
    best = max(sweep, key=lambda r: r["sentences_per_s"])["batch"]
    out |= {"inprocess_sweep": sweep, "best_batch": best}

    def baseline(layout: tuple[int, int]) -> dict[str, Any]:
        if layout not in layouts:
            layouts[layout] = [load_runtime(model_dir, layout[1]) for _ in range(layout[0])]
        row = inprocess(layouts[layout], texts, best, secs / 2, 200_000)
        _print(f"in process {layout[0]}x{layout[1]} batch {best}", row)
        return row

    http: dict[str, dict[str, Any]] = {}
    configs = list(CONFIGS.items())[: 1 if args.quick else len(CONFIGS)]
    print("starting modelplane (not pinned) for embeddings ...", flush=True)
    with (
        modelplane(tmp / "mp-embed", tmp / "modelplane-embed.log", None, example=False,
                   log_level=args.server_log_level) as server,
        Client(server.url, timeout=300) as client,
    ):  # fmt: skip
        client.create_model("minilm", "all-MiniLM-L6-v2 (ONNX)", task="feature-extraction")
        client.upload_version("minilm", model_dir, "transformers")
        oip = [oip_body(t) for t in texts]
        for name, config in configs:
            layout = (config.get("instances", 1), config["threads"])
            client.deploy(name, "minilm@1", max_queue=1024, **config)
            try:
                client.wait_ready(name, timeout=300)
                path = f"/v2/models/{name}/infer"
                similarity = _check(server.url + path, oip[0], reference)
                embed_load(server.url + path, oip, args.concurrency, args.warmup, 100_000)
                runs = {name: ("oip-v2", path, oip)}
                if name == configs[0][0]:  # the same deployment through the OpenAI API too
                    openai = [orjson.dumps({"model": name, "input": t}) for t in texts]
                    runs[f"{name} /v1/embeddings"] = ("openai", "/v1/embeddings", openai)
                before = baseline(layout)
                rows = {}
                for label, (protocol, p, bodies) in runs.items():
                    rows[label] = served_run(server, client, name, p, bodies, args)
                    rows[label] |= {"protocol": protocol, "config": config}
                    _print(f"HTTP {label}", rows[label])
                after = baseline(layout)
            finally:
                client.delete_deployment(name)
            base = (before["sentences_per_s"] + after["sentences_per_s"]) / 2
            base_cpu = (before["cpu_ms_per_sentence"] + after["cpu_ms_per_sentence"]) / 2
            for label, row in rows.items():
                http[label] = row | {
                    "layout": f"{layout[0]}x{layout[1]}",
                    "cosine_vs_inprocess": round(similarity, 5),
                    "inprocess": [before, after],
                    "inprocess_sentences_per_s": round(base, 1),
                    "ratio": round(row["sentences_per_s"] / base, 3),
                    "cpu_ratio": round(base_cpu / row["server_cpu_ms_per_sentence"], 3),
                }
    out["http"] = http
    top = max(http, key=lambda k: http[k]["ratio"])
    out |= {"http_best": top, "ratio": http[top]["ratio"], "cpu_ratio": http[top]["cpu_ratio"]}
    return out
