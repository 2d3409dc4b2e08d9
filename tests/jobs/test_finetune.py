"""Fine-tuning a registered MiniLM into a text classifier, served by the transformers runtime."""

from __future__ import annotations

import io
import json
import random
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.jobs.conftest import upload_csv, upload_model, wait_job
from tests.runtimes.minilm import model_path

# Three topics; sentences are made from a subject and a predicate of the same topic.
TOPICS = {
    "sports": (
        ["The striker", "Our goalkeeper", "The home team", "The coach", "The captain",
         "A young sprinter", "The tennis champion", "The referee"],
        ["scored twice in the second half", "won the championship final",
         "trained hard before the match", "broke the national record in the marathon",
         "missed a penalty in extra time", "celebrated the victory with the fans",
         "signed a new contract with the club", "was injured during the football game"],
    ),
    "cooking": (
        ["The chef", "My grandmother", "The baker", "Our neighbour", "The restaurant cook",
         "A home cook", "The pastry chef", "My uncle"],
        ["baked fresh bread with butter", "simmered a tomato sauce with garlic",
         "roasted vegetables in the oven", "whisked eggs and sugar for a cake",
         "chopped onions for the soup", "grilled salmon with lemon",
         "kneaded dough for the pizza", "seasoned the stew with pepper and herbs"],
    ),
    "computing": (
        ["The programmer", "Our database admin", "The developer", "A security engineer",
         "The software team", "The sysadmin", "An intern", "The cloud architect"],
        ["fixed a memory leak in the server", "deployed the new version of the app",
         "wrote unit tests for the compiler", "patched a bug in the kernel driver",
         "migrated the database to a new cluster", "refactored the python code",
         "configured the firewall and the network", "debugged a crash in the web browser"],
    ),
}  # fmt: skip
# Written apart from the templates: none of these sentences is in the dataset.
HELD_OUT = [
    ("The goalkeeper saved three shots and the team won the cup.", "sports"),
    ("She ran the hundred metres faster than anyone at the olympics.", "sports"),
    ("The basketball players practised free throws all afternoon.", "sports"),
    ("Add the flour slowly and stir until the batter is smooth.", "cooking"),
    ("He fried the mushrooms in olive oil with a pinch of salt.", "cooking"),
    ("The soup needs more garlic and a little cream.", "cooking"),
    ("The server crashed after the latest software update.", "computing"),
    ("She compiled the code and ran the test suite on her laptop.", "computing"),
    ("The network outage took the website offline for an hour.", "computing"),
]


def topics_csv(per_topic: int = 20, seed: int = 0) -> str:
    rng = random.Random(seed)
    rows = []
    for topic, (subjects, predicates) in TOPICS.items():
        pairs = [(s, p) for s in subjects for p in predicates]
        rng.shuffle(pairs)
        rows += [(f"{s} {p}.", topic) for s, p in pairs[:per_topic]]
    rng.shuffle(rows)
    return "text,topic\n" + "".join(f'"{text}",{topic}\n' for text, topic in rows)


def upload_folder(api: httpx.Client, name: str, folder: Path, tmp: Path, task: str) -> None:
    tar = tmp / f"{name}.tar"
    with tarfile.open(tar, "w") as tf:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                tf.add(path, arcname=str(path.relative_to(folder)))
    assert api.post("/models", json={"name": name, "task": task}).status_code == 201
    with open(tar, "rb") as fh:
        r = api.post(
            f"/models/{name}/versions",
            data={"format": "transformers"},
            files={"file": (tar.name, fh)},
            timeout=120,
        )
    assert r.status_code == 201, r.text


FINETUNE: dict[str, Any] = {
    "kind": "train",
    "dataset": "topics",
    "base": "minilm@1",
    "model": {"max_len": 32},
    "data": {"text_field": "text", "target": "topic"},
    "hyper": {"epochs": 3, "batch_size": 16, "learning_rate": 1e-4, "optimizer": "adamw",
              "l2": 0.01, "checkpoint_every": 3, "max_runtime_seconds": 900},
    "output": {"model": "topics", "alias": "production",
               "alias_when": {"metric": "accuracy", "min": 0.8}},
}  # fmt: skip


@pytest.mark.slow  # fine-tunes a 22M-parameter encoder on 2 cores: ~12 s quiet, minutes loaded
@pytest.mark.timeout(900)
def test_a_fine_tuned_minilm_classifies_held_out_sentences(
    job_api: httpx.Client, tmp_path: Path
) -> None:
    upload_folder(job_api, "minilm", model_path(), tmp_path, "feature-extraction")
    upload_csv(job_api, "topics", topics_csv())
    dataset = job_api.get("/datasets/topics").json()
    r = job_api.post("/jobs", json=FINETUNE)
    assert r.status_code == 201, r.text
    job = wait_job(job_api, r.json()["id"], timeout=800)
    assert job["state"] == "succeeded", job["error"]
    assert [m["epoch"] for m in job["metrics"]] == [1, 2, 3]
    assert {"train_loss", "val_loss", "accuracy", "f1"} <= set(job["metrics"][-1])
    assert job["result"]["alias"] == "production"

    version = job_api.get("/resolve/topics@production").json()
    assert version["format"] == "transformers"
    assert version["parents"] == ["minilm@1"]
    assert version["source"]["job_id"] == job["id"]
    assert version["source"]["base"] == "minilm@1"
    assert version["source"]["datasets"] == {"topics": dataset["sha256"]}
    metrics = version["metrics"]
    assert metrics["accuracy"] > metrics["baseline_accuracy"]
    files = set(version["artifact"]["files"])
    assert {"model.onnx", "config.json", "tokenizer.json", "model.safetensors"} <= files
    assert job_api.get("/models/topics").json()["task"] == "text-classification"
    outputs = {t["name"]: t["shape"] for t in version["signature"]["outputs"]}
    assert outputs == {"label": [-1], "probabilities": [-1, 3]}

    # Serve the new version and ask it about sentences it has never seen.
    deployment = {"name": "topics", "model": "topics@production", "max_batch_size": 32}
    r = job_api.post("/deployments", json=deployment)
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 180
    while (state := job_api.get("/deployments/topics").json())["state"] != "ready":
        assert state["state"] != "failed" and time.monotonic() < deadline, state
        time.sleep(0.2)
    base = str(job_api.base_url).rstrip("/").removesuffix("/api/v1")
    texts = [text for text, _ in HELD_OUT]
    body = {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES",
                        "data": texts}]}  # fmt: skip
    out = httpx.post(f"{base}/v2/models/topics/infer", json=body, timeout=60).json()
    assert "outputs" in out, out
    labels = next(o for o in out["outputs"] if o["name"] == "label")["data"]
    hits = sum(got == want for got, (_, want) in zip(labels, HELD_OUT, strict=True))
    assert hits / len(HELD_OUT) >= 0.8, list(zip(labels, HELD_OUT, strict=True))


def _tiny_transformers_tar(weights: bool) -> bytes:
    """A folder with a config.json (and a stand-in weights file): enough for submit checks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        files = {"config.json": json.dumps({"model_type": "bert"}).encode()}
        if weights:
            files["model.safetensors"] = b"not really weights"
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_fine_tuning_specs_that_cannot_run_are_refused_at_submit(job_api: httpx.Client) -> None:
    from modelplane.examples import double_onnx

    upload_csv(job_api, "topics", topics_csv(per_topic=4))
    upload_model(job_api, "double", double_onnx())  # format onnx
    for name, weights in (("tiny", True), ("tiny-onnx-only", False)):
        assert job_api.post("/models", json={"name": name}).status_code == 201
        r = job_api.post(
            f"/models/{name}/versions",
            data={"format": "transformers"},
            files={"file": (f"{name}.tar", _tiny_transformers_tar(weights))},
        )
        assert r.status_code == 201, r.text
    r = job_api.post("/models", json={"name": "embedder", "task": "feature-extraction"})
    assert r.status_code == 201, r.text
    spec = {**FINETUNE, "base": "tiny@1"}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"base": "nope@1"}, 404, "nope"),
        ({"base": "tiny@7"}, 404, "7"),
        ({"base": "double@1"}, 422, "'transformers'"),
        ({"base": "tiny-onnx-only@1"}, 422, "weights"),
        ({"data": {"text_field": "body", "target": "topic"}}, 422, "'body'"),
        ({"data": {"text_field": "text", "target": "label"}}, 422, "'label'"),
        ({"data": {"text_field": "text"}}, 422, "data.target"),
        ({"dataset": "nope"}, 404, "nope"),
        ({"model": {"architecture": "mlp", "max_len": 32}}, 422, "model.architecture"),
        ({"resources": {"workers": 2}}, 422, "resources.workers"),
        ({"hyper": {"loss": "mse"}}, 422, "hyper.loss"),
        ({"output": {"model": "embedder"}}, 422, "text-classification"),
        ({"kind": "federated_train", "partition_by": "topic"}, 422, "base"),
    ]
    for change, status, words in cases:
        r = job_api.post("/jobs", json={**spec, **change})
        assert r.status_code == status, (change, r.text)
        assert words in r.json()["error"], (change, r.text)
    assert job_api.get("/jobs").json()["jobs"] == []


# -- the fine-tuning loop itself, on a tiny random BERT (seconds, not minutes) -------------
class Recorder:
    """Callbacks that keep checkpoints (serialised, as the job context does) and progress."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.states: list[bytes] = []
        self.epochs: list[dict[str, float]] = []
        self.stop_after = stop_after

    def progress(self, epoch: int, total: int, metrics: dict[str, float]) -> None:
        self.epochs.append(metrics)

    def checkpoint(self, state: dict[str, Any]) -> None:
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        self.states.append(buf.getvalue())

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.epochs) >= self.stop_after

    def log(self, line: str) -> None:
        pass


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide random BERT with MiniLM's tokenizer files."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    BertModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(model_path() / name, folder / name)
    return folder


def _texts() -> Any:
    import pandas as pd

    from modelplane.training.finetune import prepare_texts
    from modelplane.training.spec import DataSpec, Hyper

    frame = pd.read_csv(io.StringIO(topics_csv(per_topic=8)))
    hyper = Hyper(epochs=4, batch_size=8, learning_rate=1e-3, optimizer="adamw", seed=3)
    return prepare_texts(DataSpec(text_field="text", target="topic"), hyper, frame), hyper


def test_a_resumed_fine_tuning_ends_where_a_straight_one_does(tiny_bert: Path) -> None:
    import torch

    from modelplane.training.export import load_checkpoint
    from modelplane.training.finetune import finetune

    data, hyper = _texts()
    assert data.classes == ["computing", "cooking", "sports"] and data.n_train == 18
    straight = finetune(tiny_bert, data, hyper, Recorder(), max_len=16)
    first = Recorder(stop_after=2)  # "cancelled" after epoch 2
    stopped = finetune(tiny_bert, data, hyper, first, max_len=16, info={"base": "tiny@1"})
    assert stopped.stop_reason == "cancelled" and stopped.epochs_run == 2
    state = load_checkpoint(first.states[-1])
    assert state["epoch"] == 2 and state["base"] == "tiny@1" and state["kind"] == "finetune"
    resumed = finetune(tiny_bert, data, hyper, Recorder(), max_len=16, resume=state)
    assert resumed.epochs_run == straight.epochs_run == 4
    assert resumed.metrics["val_loss"] == pytest.approx(straight.metrics["val_loss"], abs=1e-6)
    for a, b in zip(
        resumed.model.state_dict().values(), straight.model.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6)


def test_the_saved_folder_serves_what_torch_computes(tiny_bert: Path, tmp_path: Path) -> None:
    import numpy as np
    import torch

    from modelplane.runtimes import RuntimeOptions, runtime_class
    from modelplane.runtimes.export import export_model_onnx
    from modelplane.training.finetune import evaluate_texts, finetune, save_classifier

    data, hyper = _texts()
    hyper = hyper.model_copy(update={"epochs": 2, "early_stopping_patience": 1})
    result = finetune(tiny_bert, data, hyper, Recorder(), max_len=16, dropout=0.2)
    assert {"accuracy", "f1", "val_loss", "baseline_accuracy"} <= set(result.metrics)
    folder = save_classifier(result, tmp_path / "out")
    diff = export_model_onnx(result.model, result.tokenizer, folder / "model.onnx")
    assert diff < 1e-3
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "computing", "1": "cooking", "2": "sports"}
    assert config["label2id"] == {"computing": 0, "cooking": 1, "sports": 2}

    runtime = runtime_class("transformers").load(folder, RuntimeOptions(task="text-classification"))
    texts = [text for text, _ in HELD_OUT]
    served = runtime.predict({"text": np.array(texts, dtype=object)})
    enc = result.tokenizer(texts, padding=True, truncation=True, max_length=16,
                           return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        expected = torch.softmax(result.model(**enc), dim=1).numpy()
    assert np.allclose(served["probabilities"], expected, atol=1e-4)
    assert list(served["label"]) == [result.classes[i] for i in expected.argmax(1)]
    labels = np.array([result.classes.index(t) for _, t in HELD_OUT])
    metrics = evaluate_texts(result.model, result.tokenizer, texts, labels, 16)
    assert metrics["accuracy"] == pytest.approx(float(np.mean(expected.argmax(1) == labels)))
