"""``train`` jobs with ``architecture: causal_lm`` via a real server: SDK, CLI, refusals, resume."""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from modelplane.cli.main import app
from modelplane.client import Client
from modelplane.settings import Settings
from tests.conftest import LiveServer
from tests.jobs.conftest import upload_csv, upload_model, wait_job
from tests.training.lm_corpus import EATS, EATS_NOW, chats, jsonl, texts

FROM_SCRATCH: dict[str, Any] = {
    "kind": "train",
    "dataset": "fruit",
    "model": {"architecture": "causal_lm", "family": "gpt2", "layers": 2, "heads": 2,
              "d_model": 64, "max_len": 64, "vocab_size": 400},
    "data": {"validation_split": 0.1},
    "hyper": {"epochs": 30, "batch_size": 8, "learning_rate": 3e-3},
    "output": {"model": "fruit", "alias": "production",
               "alias_when": {"metric": "perplexity", "max": 3.0}},
}  # fmt: skip
CHAT_FINETUNE_YAML = """\
kind: train
dataset: fruit-chat
base: fruit@production
model: {architecture: causal_lm}
data: {validation_split: 0.1, assistant_only_loss: true}
hyper: {epochs: 100, batch_size: 8, learning_rate: 3e-3, schedule: constant}
output: {model: fruit-chat, description: answers who eats what}
"""


def _upload_jsonl(client: Client, name: str, rows: list[dict[str, Any]], tmp: Path) -> None:
    path = tmp / f"{name}.jsonl"
    path.write_text(jsonl(rows))
    client.upload_dataset(name, path)


def _unpack(client: Client, ref: str, tmp: Path) -> Path:
    tar = client.download(ref, tmp / f"{ref.replace('@', '-')}.tar")
    folder = tmp / ref.replace("@", "-")
    with tarfile.open(tar) as tf:
        tf.extractall(folder, filter="data")
    return folder


def _complete(folder: Path, prompt: str, chat: bool = False) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    lm = AutoModelForCausalLM.from_pretrained(folder)
    if chat:
        messages = [{"role": "user", "content": prompt}]
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=not chat, return_tensors="pt")
    gen = lm.generate(**ids, max_new_tokens=24, do_sample=False)
    return str(tok.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))


def _served_over_openai(srv: LiveServer, text_ref: str, chat_ref: str) -> None:
    """Both versions deployed; the unchanged openai SDK gets the corpus' completions."""
    import openai

    from tests.llm.served import deploy, wait_ready

    with httpx.Client(base_url=srv.url, timeout=60) as http:
        deploy(http, "fruit", text_ref)
        deploy(http, "fruit-chat", chat_ref)
        wait_ready(http, "fruit")
        wait_ready(http, "fruit-chat")
    with openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0) as oa:
        for name, fruit in EATS.items():
            r = oa.completions.create(model="fruit", prompt=f"{name} eats", temperature=0,
                                      max_tokens=24)  # fmt: skip
            assert r.choices[0].text.split()[0] == fruit, r.choices[0].text
        for name, fruit in EATS_NOW.items():
            c = oa.chat.completions.create(
                model="fruit-chat", temperature=0, max_tokens=24,
                messages=[{"role": "user", "content": f"what does {name} eat?"}],
            )  # fmt: skip
            assert c.choices[0].message.content == f"{name} eats {fruit}."
            assert c.choices[0].finish_reason == "stop"  # at <|im_end|>, not max_tokens


@pytest.mark.slow  # two training jobs (each a fresh process importing torch), two deployments
@pytest.mark.timeout(900)
def test_causal_lms_trained_and_chat_fine_tuned_by_jobs_are_served(
    job_settings: Settings, start_server: Any, tmp_path: Path
) -> None:
    import torch

    torch.set_num_threads(1)
    srv: LiveServer = start_server(job_settings)
    client = Client(srv.url)
    _upload_jsonl(client, "fruit", [{"text": t} for t in texts()], tmp_path)
    _upload_jsonl(client, "fruit-chat", chats(EATS_NOW), tmp_path)
    dataset = client.get_dataset("fruit")

    # From scratch, through the SDK.
    job = client.wait_job(client.submit_job(FROM_SCRATCH).id, timeout=400)
    assert job.state == "succeeded", job.error
    assert [m["epoch"] for m in job.metrics] == list(range(1, 31))
    assert {"train_loss", "val_loss", "perplexity", "step"} <= set(job.metrics[-1])
    assert job.result["alias"] == "production"
    version = client.get_version("fruit@production")
    assert version.format == "transformers" and version.parents == []
    assert client.get_model("fruit").task == "text-generation"
    assert version.source["job_id"] == job.id and version.source["chat"] is False
    assert version.source["datasets"] == {"fruit": dataset.sha256}
    assert version.params["model"]["architecture"] == "causal_lm"
    assert version.params["hyper"]["optimizer"] == "adamw"  # the causal-LM default
    assert version.metrics["perplexity"] < version.metrics["baseline_perplexity"] / 5
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json"} <= set(version.artifact.files)  # fmt: skip
    folder = _unpack(client, "fruit@production", tmp_path)
    for name, fruit in EATS.items():
        assert _complete(folder, f"{name} eats").split()[0] == fruit

    # Fine-tuned on chats through the CLI: a base without a template gets the default one.
    spec = tmp_path / "chat.yaml"
    spec.write_text(CHAT_FINETUNE_YAML)
    result = CliRunner().invoke(app, ["--url", srv.url, "--json", "jobs", "submit", str(spec),
                                      "--wait"], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    tuned = json.loads(result.stdout)
    assert tuned["state"] == "succeeded", tuned
    version = client.get_version("fruit-chat@1")
    assert version.parents == [f"fruit@{job.result['version']}"]
    assert version.source["base"] == f"fruit@{job.result['version']}" and version.source["chat"]
    assert client.get_model("fruit-chat").task == "text-generation"
    assert [n.model for n in client.lineage("fruit-chat@1").ancestors] == ["fruit"]
    chat = _unpack(client, "fruit-chat@1", tmp_path)
    assert "chat_template" in json.loads((chat / "tokenizer_config.json").read_text())
    for name, fruit in EATS_NOW.items():
        assert _complete(chat, f"what does {name} eat?", chat=True) == f"{name} eats {fruit}."

    _served_over_openai(srv, "fruit@production", "fruit-chat@1")


def _folder_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _upload_folder(api: httpx.Client, name: str, files: dict[str, bytes]) -> None:
    assert api.post("/models", json={"name": name}).status_code == 201
    r = api.post(f"/models/{name}/versions", data={"format": "transformers"},
                 files={"file": (f"{name}.tar", _folder_tar(files))})  # fmt: skip
    assert r.status_code == 201, r.text


def test_causal_lm_specs_that_cannot_run_are_refused_at_submit(job_api: httpx.Client) -> None:
    from modelplane.examples import double_onnx

    for name, rows in (("fruit", [{"text": t} for t in texts()]), ("chat", chats()),
                       ("one", [{"text": "alone"}])):  # fmt: skip
        r = job_api.post("/datasets", data={"name": name},
                         files={"file": (f"{name}.jsonl", jsonl(rows).encode())})  # fmt: skip
        assert r.status_code == 201, r.text
    upload_csv(job_api, "bodies", "body\nhello\nworld\n")
    upload_model(job_api, "double", double_onnx())
    gpt = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_positions": 32}
    weights = b"stand-in weights"
    _upload_folder(job_api, "tiny-gpt", {"config.json": json.dumps(gpt).encode(),
                                         "model.safetensors": weights})  # fmt: skip
    _upload_folder(job_api, "nested-gpt", {"m/config.json": json.dumps(gpt).encode(),
                                           "m/model.safetensors": weights})  # fmt: skip
    bert = {"architectures": ["BertModel"], "model_type": "bert"}
    _upload_folder(job_api, "tiny-bert", {"config.json": json.dumps(bert).encode(),
                                          "model.safetensors": weights})  # fmt: skip
    _upload_folder(job_api, "no-weights", {"config.json": json.dumps(gpt).encode()})
    r = job_api.post("/models", json={"name": "embedder", "task": "feature-extraction"})
    assert r.status_code == 201, r.text
    mlp = {"kind": "train", "dataset": "bodies", "model": {"architecture": "mlp"},
           "data": {"target": "body"}, "output": {"model": "m"}}  # fmt: skip
    tune = {**FROM_SCRATCH, "base": "tiny-gpt@1", "model": {"architecture": "causal_lm"}}
    model = FROM_SCRATCH["model"]
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"dataset": "nope"}, 404, "nope"),
        ({**tune, "base": "nope@1"}, 404, "nope"),
        ({**tune, "base": "tiny-gpt@9"}, 404, "9"),
        ({**tune, "base": "double@1"}, 422, "'transformers'"),
        ({**tune, "base": "tiny-bert@1"}, 422, "not a causal language model"),
        ({**tune, "base": "no-weights@1"}, 422, "weights"),
        ({**tune, "model": {"architecture": "causal_lm", "layers": 4}}, 422, "model.layers"),
        ({**tune, "model": {"architecture": "causal_lm", "max_len": 64}}, 422, "model.max_len"),
        ({**tune, "base": "nested-gpt@1", "model": {"architecture": "causal_lm",
                                                    "max_len": 33}}, 422, "32 tokens"),
        ({"dataset": "bodies"}, 422, "neither a 'text' nor a 'messages'"),
        ({"data": {"text_field": "body"}}, 422, "data.text_field"),
        ({"data": {"assistant_only_loss": True}}, 422, "data.assistant_only_loss"),
        ({"dataset": "one"}, 422, "at least 2"),
        ({"model": {**model, "vocab_size": 100}}, 422, "model.vocab_size"),
        ({"model": {**model, "heads": 3}}, 422, "divisible"),
        ({"model": {**model, "n_layer": 2}}, 422, "n_layer"),
        ({"model": {**model, "family": "bloom"}}, 422, "family"),
        ({"data": {"target": "text"}}, 422, "data.target"),
        ({"hyper": {"loss": "mse"}}, 422, "hyper.loss"),
        ({"hyper": {"max_steps": 0}}, 422, "max_steps"),
        ({"resources": {"workers": 2}}, 422, "resources.workers"),
        ({"output": {"model": "embedder"}}, 422, "text-generation"),
        ({"kind": "federated_train", "partition_by": "text"}, 422, "model.architecture"),
        ({**mlp, "hyper": {"max_steps": 10}}, 422, "hyper.max_steps"),
        ({**mlp, "data": {"target": "body", "assistant_only_loss": True}}, 422,
         "data.assistant_only_loss"),
        ({**mlp, "model": {"architecture": "mlp", "family": "llama"}}, 422, "model.family"),
    ]  # fmt: skip
    for change, status, words in cases:
        r = job_api.post("/jobs", json={**FROM_SCRATCH, **change})
        assert r.status_code == status, (change, r.text)
        assert words in r.json()["error"], (change, r.text)
    assert job_api.get("/jobs").json()["jobs"] == []  # nothing was queued
    # Without model.max_len a fine-tuning job truncates at the base's context.
    r = job_api.post("/jobs", json=tune)
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["model"]["max_len"] == 32
    job_api.post(f"/jobs/{r.json()['id']}/cancel")  # its stand-in weights would not load
    assert wait_job(job_api, r.json()["id"], timeout=60)["state"] in ("cancelled", "failed")
    # The chat dataset passes the same checks.
    ok = job_api.post("/jobs", json={**FROM_SCRATCH, "dataset": "chat", "hyper": {"epochs": 1},
                                     "data": {"assistant_only_loss": True}})  # fmt: skip
    assert ok.status_code == 201, ok.text
    job_api.post(f"/jobs/{ok.json()['id']}/cancel")  # it only had to be accepted
    assert wait_job(job_api, ok.json()["id"], timeout=60)["state"] in ("cancelled", "succeeded")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_causal_lm_job_resumes_from_its_checkpoint_when_its_runner_dies(
    tmp_path: Path, spawn_server: Any
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    env_extra = {"MODELPLANE_JOB_POLL_SECONDS": "0.2", "MODELPLANE_JOB_STALE_SECONDS": "3"}
    os.environ.update(env_extra)
    try:
        first = spawn_server(settings)
        api = httpx.Client(base_url=f"{first.url}/api/v1", timeout=30)
        body = jsonl([{"text": t} for t in texts()]).encode()
        r = api.post("/datasets", data={"name": "fruit"}, files={"file": ("fruit.jsonl", body)})
        assert r.status_code == 201, r.text
        spec = {**FROM_SCRATCH, "hyper": {"epochs": 5000, "batch_size": 8}}
        job_id = api.post("/jobs", json=spec).json()["id"]
        deadline = time.monotonic() + 120
        while len(api.get(f"/jobs/{job_id}").json()["metrics"]) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.kill(first.proc.pid, signal.SIGKILL)  # the runner dies; its job process with it
        first.proc.wait(10)
        second = spawn_server(settings)
        api = httpx.Client(base_url=f"{second.url}/api/v1", timeout=30)
        deadline = time.monotonic() + 120
        logs = ""
        while "resuming after epoch" not in logs:
            assert time.monotonic() < deadline, logs[-2000:]
            logs = " ".join(
                line["line"] for line in api.get(f"/jobs/{job_id}/logs").json()["lines"]
            )
            time.sleep(0.2)
        assert api.get(f"/jobs/{job_id}").json()["attempts"] == 2
        api.post(f"/jobs/{job_id}/cancel")
        job = wait_job(api, job_id, timeout=60)
        assert job["state"] == "cancelled"
        epochs = [m["epoch"] for m in job["metrics"]]
        assert epochs == sorted(set(epochs)) and epochs[0] == 1  # continued, not restarted
        steps = [m["step"] for m in job["metrics"]]
        assert steps == [4 * e for e in epochs]  # 27 rows in batches of 8: 4 steps an epoch
    finally:
        for key in env_extra:
            os.environ.pop(key, None)
