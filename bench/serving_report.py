"""Targets and the printed report of bench/serving.py (figures and ratios of one run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TARGET_RPS_RATIO = 1.5  # modelplane / MLServer, trivial model, 8 connections
TARGET_EMBED_RATIO = 0.9  # served / in process, MiniLM
TARGET_OVERHEAD_MS = 0.5  # one connection: HTTP p50 - in-process predict p50


def cpu_ratio(other: dict[str, Any], this: dict[str, Any]) -> float:
    """How many times less CPU per request ``this`` server spends than ``other``."""
    mine = this["server_cpu_us_per_request"]
    return other["server_cpu_us_per_request"] / mine if mine else float("nan")


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """Each target: the figure, the threshold and pass (None when not measured this run)."""
    out: dict[str, Any] = {}
    trivial = result.get("trivial", {})
    servers = trivial.get("servers", {})
    mp = servers.get(trivial.get("default_label", ""), {}).get("best")
    ml = servers.get("MLServer", {}).get("best")
    rps_ratio = round(mp["rps"] / ml["rps"], 2) if mp and ml and ml["rps"] else None
    out["trivial_rps_vs_mlserver"] = {
        "value": rps_ratio,
        "target": f">= {TARGET_RPS_RATIO}x",
        "pass": None if rps_ratio is None else rps_ratio >= TARGET_RPS_RATIO,
    }
    # The same comparison by CPU per request: what the rps ratio would be if both servers
    # got the same share of their core (on a busy machine they do not, run to run).
    per_cpu = round(cpu_ratio(ml, mp), 2) if mp and ml else None
    out["trivial_rps_per_cpu_vs_mlserver"] = {
        "value": per_cpu,
        "target": f">= {TARGET_RPS_RATIO}x (per CPU)",
        "pass": None if per_cpu is None else per_cpu >= TARGET_RPS_RATIO,
    }
    out["trivial_p99_vs_mlserver"] = {
        "value": [mp["p99_ms"], ml["p99_ms"]] if mp and ml else None,
        "target": "modelplane p99 <= MLServer p99",
        "pass": None if not (mp and ml) else mp["p99_ms"] <= ml["p99_ms"],
    }
    emb = result.get("embeddings", {}).get("ratio")
    out["embeddings_vs_inprocess"] = {
        "value": emb,
        "target": f">= {TARGET_EMBED_RATIO}x",
        "pass": None if emb is None else emb >= TARGET_EMBED_RATIO,
    }
    over = trivial.get("latency", {}).get("overhead_p50_ms")
    out["latency_overhead_p50_ms"] = {
        "value": over,
        "target": f"< {TARGET_OVERHEAD_MS} ms",
        "pass": None if over is None else over < TARGET_OVERHEAD_MS,
    }
    return out


def _trivial(t: dict[str, Any], env: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    servers = t.get("servers")
    if not servers:
        return []
    pinned = "server on core 0, client on core 1" if env["pinned"] else "NOT pinned"
    tool = (
        f"wrk -t1 -c{cfg['connections']} -d{cfg['duration']:g}s --latency"
        if t["tool"] == "wrk"
        else f"httpx loop, {cfg['connections']} tasks (wrk missing: harness check only)"
    )
    ex = t["example_default"]
    out = [
        "1) trivial model y = 2x, float32[1,4], OIP v2 JSON",
        f"   {tool}; {pinned}; best of {cfg['rounds']} interleaved round(s)",
        f"   `serve --example` deploys max_batch_size {ex['max_batch_size']}, "
        f"max_batch_delay_ms {ex['max_batch_delay_ms']:g} (the first modelplane row; the API's "
        "own default is 8 / 2 ms)",
        "",
        f"   {'server':<32}{'rps':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'cpu us/req':>11}{'rows/batch':>11}{'load1':>7}   rps of rounds",
    ]
    ml = servers.get("MLServer", {}).get("best")
    bare = servers.get("bare ASGI", {}).get("best")
    for label, s in servers.items():
        b = s["best"]
        rounds = ", ".join(f"{r['rps']:,.0f}" for r in s["rounds"])
        per_batch = b.get("rows_per_batch")
        out.append(
            f"   {label:<32}{b['rps']:>9,.0f}{b['p50_ms']:>9.2f}{b['p90_ms']:>9.2f}"
            f"{b['p99_ms']:>9.2f}{b['errors']:>8}{b['server_cpu_us_per_request']:>11.0f}"
            f"{per_batch if per_batch is not None else '':>11}"
            f"{b['loadavg_1m']:>7}   {rounds}"
        )
    out.append("")
    for label, s in servers.items():
        if not label.startswith("modelplane"):
            continue
        b = s["best"]
        parts = []
        if ml:
            parts.append(f"{b['rps'] / ml['rps']:.2f}x MLServer rps, p99 {b['p99_ms']:.2f} vs "
                         f"{ml['p99_ms']:.2f} ms, {cpu_ratio(ml, b):.2f}x per CPU")  # fmt: skip
        if bare:
            parts.append(f"{b['rps'] / bare['rps']:.2f}x the bare-ASGI ceiling")
        if parts:
            out.append(f"   {label:<32}" + "; ".join(parts))
    if ml and bare:
        out.append(f"   {'MLServer':<32}{ml['rps'] / bare['rps']:.2f}x the bare-ASGI ceiling")
    out.append(
        "   (per CPU: the other server's CPU us/request over this one's, which moves far less"
    )
    out.append("    with other work on the machine than requests/s do)")
    for name, why in t.get("skipped", {}).items():
        out.append(f"   {name} skipped: {why}")
    return out


def _latency(t: dict[str, Any]) -> list[str]:
    lat = t.get("latency")
    if not lat:
        return []
    tool = "wrk -t1 -c1" if t["tool"] == "wrk" else "httpx loop, 1 task"
    inproc = lat["inprocess"]
    out = [
        "",
        f"3) one connection, sequential requests ({tool}), trivial model; same pinning;",
        "   the round with the lowest p50 is shown",
        f"   {'server':<32}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'rps':>9}{'load1':>7}"
        "   p50 of rounds",
    ]
    for label, r in lat["http"].items():
        of_rounds = ", ".join(f"{x:.3f}" for x in r.get("p50_ms_of_rounds", []))
        out.append(f"   {label:<32}{r['p50_ms']:>9.3f}{r['p90_ms']:>9.3f}{r['p99_ms']:>9.3f}"
                   f"{r['rps']:>9,.0f}{r['loadavg_1m']:>7}   {of_rounds}")  # fmt: skip
    out += [
        f"   {'in process predict':<32}{inproc['p50_ms']:>9.4f}{'':>9}{inproc['p99_ms']:>9.4f}"
        f"{'':>9}{inproc['loadavg_1m']:>7}   (OnnxRuntime.predict, 1 thread, "
        f"{inproc['calls']:,} calls)",
        f"   HTTP overhead at p50 ({lat['modelplane_label']}): {lat['overhead_p50_ms']:.3f} ms",
    ]
    return out


def _embeddings(e: dict[str, Any]) -> list[str]:
    if not e:
        return []
    out = [
        "",
        f"2) all-MiniLM-L6-v2 embeddings (ONNX, transformers runtime, {e['threads']} threads in "
        f"all), {e['sentences']} sentences of {e['tokens_mean']} tokens on average "
        f"({e['tokens_min']}-{e['tokens_max']}); no pinning",
        f"   in process (the worker's runtime class, 1 runtime x {e['threads']} threads), "
        "by batch size (two runs each, in the order 8..64..8):",
    ]
    for r in e["inprocess_sweep"]:
        out.append(f"     batch {r['batch']:>3}: {r['sentences_per_s']:>8.1f} sentences/s"
                   f"{r['cpu_ms_per_sentence']:>8.2f} cpu-ms/sentence   "
                   f"load {r['loadavg_1m']}   runs: "
                   f"{', '.join(str(x) for x in r.get('runs', []))}")  # fmt: skip
    out += [
        f"   over HTTP: {e['concurrency']} concurrent httpx clients, one sentence per request, "
        "dynamic batching; each",
        f"   deployment's runs are bracketed by two in-process runs of its layout at batch "
        f"{e['best_batch']} ('in-proc' is their mean)",
        f"     {'deployment':<26}{'layout':>7}{'sent/s':>8}{'in-proc':>8}{'ratio':>7}"
        f"{'cpu-ms/sent':>12}{'in-proc':>8}{'ratio':>7}{'p50 ms':>8}{'p99 ms':>8}{'err':>5}"
        f"{'rows/b':>7}{'srv cpu':>8}{'cli cpu':>8}{'load1':>6}",
    ]
    for name, r in e["http"].items():
        base_cpu = sum(x["cpu_ms_per_sentence"] for x in r["inprocess"]) / 2
        out.append(
            f"     {name:<26}{r['layout']:>7}{r['sentences_per_s']:>8.1f}"
            f"{r['inprocess_sentences_per_s']:>8.1f}{r['ratio']:>6.2f}x"
            f"{r['server_cpu_ms_per_sentence']:>12.2f}{base_cpu:>8.2f}{r['cpu_ratio']:>6.2f}x"
            f"{r['p50_ms']:>8.0f}{r['p99_ms']:>8.0f}{r['errors']:>5}{r['rows_per_batch']:>7}"
            f"{r['server_cpu_share']:>8}{r['client_cpu_share']:>8}{r['loadavg_1m']:>6}"
        )
    out += [
        "     (layout: runtimes x threads each; cpu-ms/sent: CPU per sentence of the server's",
        "      gateway + workers vs of the in-process runs, ratio = in-proc / served; srv / cli",
        "      cpu: CPU seconds per second of the run of the server and of the httpx client)",
        f"   best: {e['http_best']} at {e['ratio']:.2f}x in process by sentences/s, "
        f"{e['cpu_ratio']:.2f}x by CPU per sentence",
    ]
    return out


def report(result: dict[str, Any]) -> str:
    env, cfg = result["environment"], result["config"]
    t = result.get("trivial", {})
    out = [
        f"serving{' (quick)' if result['quick'] else ''}: {env['cpus']} cpus, 1-min load "
        f"average {env['loadavg_1m_before']} before, {env['loadavg_1m_after']} after "
        f"(this benchmark alone adds ~2); {env['seconds']} s",
        "",
    ]
    out += _trivial(t, env, cfg)
    out += _embeddings(result.get("embeddings", {}))
    out += _latency(t)
    for part, why in result.get("failed", {}).items():
        out += ["", f"{part}: FAILED ({why})"]
    out += ["", "targets:"]
    for name, tg in result["targets"].items():
        out.append(f"   {name:<33}{tg['target']:<34}{tg['value']!s:<18}{_verdict(tg['pass'])}")
    return "\n".join(out)


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
