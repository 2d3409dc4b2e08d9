"""Helpers for the served text-generation tests: a long-running model, publish, deploy, wait.

``long_model`` is a randomly initialised GPT-2 with a 2048-token context whose
end-of-text token can never win (its output row is zero while every other
logit of a random model has a positive maximum): greedy decoding runs until
``max_tokens``, so a test can hold a sequence slot for as long as it needs.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx

from modelplane.client import Client

READY_TIMEOUT = 180.0
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def long_model(tiny_dir: Path, dst: Path, positions: int = 2048) -> Path:
    """A random GPT-2 that never stops by itself, with the tokenizer of ``tiny_dir``."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    if (dst / "config.json").is_file():
        return dst
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    eos = int(tok.eos_token_id)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tok), n_positions=positions, n_embd=64, n_layer=2, n_head=4,
        bos_token_id=eos, eos_token_id=eos,
    )  # fmt: skip
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.transformer.wte.weight[eos].zero_()  # tied: EOS's logit is always 0
    model.generation_config.pad_token_id = eos
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    for name in TOKENIZER_FILES:
        if (tiny_dir / name).is_file():
            shutil.copy(tiny_dir / name, dst / name)
    return dst


def publish(url: str, model: str, folder: Path, key: str | None = None) -> int:
    with Client(url, api_key=key) as c:
        c.create_model(model, task="text-generation")
        return c.upload_version(model, folder, "transformers").version


def deploy(http: httpx.Client, name: str, model: str, **config: Any) -> None:
    r = http.post("/api/v1/deployments", json={"name": name, "model": model, **config})
    assert r.status_code == 201, r.text


def status(http: httpx.Client, name: str) -> dict[str, Any]:
    r = http.get(f"/api/v1/deployments/{name}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_ready(http: httpx.Client, name: str, version: int | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        s = status(http, name)
        assert s["state"] != "failed", s["reason"]
        workers_up = s["workers"] and all(w["alive"] for w in s["workers"])
        if s["state"] == "ready" and workers_up and version in (None, s["version"]):
            return s
        assert time.monotonic() < deadline, s
        time.sleep(0.05)


def wait_status(http: httpx.Client, name: str, key: str, value: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (s := status(http, name))[key] != value:
        assert time.monotonic() < deadline, s
        time.sleep(0.02)
