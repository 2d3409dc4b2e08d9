"""Fine-tuning a Hugging Face encoder with a new classification head.

The network is the base encoder (``AutoModel``, e.g. all-MiniLM-L6-v2), mean
pooling over the real (unpadded) tokens, dropout and one linear layer::

    logits = head(dropout(mean(encoder(input_ids, attention_mask)[0], mask)))

Every weight trains, with the job's ``Hyper`` (optimizer, learning rate and
schedule, L1/L2 on weights, epochs, batch size, early stopping, runtime limit;
gradients are clipped to norm 1.0, as transformer fine-tuning usually is).
Texts are tokenised per batch by the base's own fast tokenizer, truncated to
``max_len`` tokens. The rows are split into train/validation exactly as
``prepare`` splits them for the ``train`` kind (stratified by class, by seed).

Progress, checkpoints and cancellation go through the same ``Callbacks`` as
``loop.train``; a checkpoint is a plain dict (``torch.load(weights_only=True)``
reads it) holding::

    format, kind="finetune", epoch, model, optimizer, scheduler (state_dicts),
    rng, best {loss, epoch, bad_epochs, model|None}, history, elapsed, classes,
    and the caller's ``info`` keys

and passing it back as ``resume`` continues the run exactly (batches are
shuffled by (seed, epoch)). ``save_classifier`` writes the result as a Hugging
Face folder: the encoder (``config.json`` with ``id2label``/``label2id``,
``model.safetensors``), the tokenizer files, the head (``classifier.safetensors``)
and ``classifier.json`` describing it; exporting ``model.onnx`` (what the
``transformers`` runtime serves) is left to the caller.
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from modelplane.training.data import Table, _classes, _extract, _labels, _split, to_columns
from modelplane.training.loop import STOP_REASONS, Callbacks, stop_code, update_best
from modelplane.training.metrics import f1_macro
from modelplane.training.optim import l1_penalty, make_optimizer, make_scheduler
from modelplane.training.spec import DataSpec, Hyper, ModelSpec, TrainSpec

CHECKPOINT_FORMAT = 1
MAX_GRAD_NORM = 1.0
EVAL_BATCH = 64
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class TextData:
    """Texts and class indices, split into training and validation rows."""

    x_train: list[str]
    y_train: np.ndarray  # int64 class indices
    x_val: list[str]
    y_val: np.ndarray
    classes: list[str]

    @property
    def n_train(self) -> int:
        return len(self.x_train)


def prepare_texts(data: DataSpec, hyper: Hyper, table: Table) -> TextData:
    """``data.text_field`` and ``data.target`` of ``table``, split as ``prepare`` splits them."""
    if data.text_field is None or data.target is None:
        raise ValueError("fine-tuning needs data.text_field and data.target")
    # The transformer spec only selects the text column; the split is the train kind's own.
    spec = TrainSpec(model=ModelSpec(architecture="transformer"), hyper=hyper, data=data)
    raw = _extract(spec, to_columns(table))
    classes = _classes([raw.y])
    if len(classes) > data.max_classes:
        raise ValueError(
            f"data.target: {len(classes)} distinct values, more than data.max_classes "
            f"({data.max_classes}); fine-tuning trains a classifier"
        )
    tr, va = _split(raw, classes, spec)
    assert raw.y is not None  # _extract keeps the target when data.target is set
    labels = _labels(raw.y, classes)
    texts = [str(t) for t in raw.x]
    return TextData([texts[i] for i in tr], labels[tr], [texts[i] for i in va], labels[va], classes)


class Classifier(nn.Module):
    """Encoder -> mean pooling over real tokens -> dropout -> linear: class logits."""

    def __init__(self, encoder: Any, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.encoder: Any = encoder  # a transformers PreTrainedModel (untyped)
        self.dropout = nn.Dropout(dropout)
        hidden = int(encoder.config.hidden_size)
        self.head = nn.Linear(hidden, n_classes)
        self._types = "token_type_ids" in inspect.signature(encoder.forward).parameters

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        extra = {"token_type_ids": token_type_ids} if self._types else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra)[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        logits: Tensor = self.head(self.dropout(pooled))
        return logits


@dataclass
class FinetuneResult:
    model: Classifier  # in eval mode; keyword inputs as the tokenizer returns them -> logits
    tokenizer: Any  # the base's fast tokenizer, ``model_max_length`` set to max_len
    classes: list[str]
    metrics: dict[str, float]  # val_loss, accuracy, f1, baseline_accuracy, train_loss
    history: list[dict[str, float]]
    epochs_run: int
    stop_reason: str = "completed"  # one of loop.STOP_REASONS
    max_len: int = 128


def load_base(base: Path, n_classes: int, dropout: float, max_len: int) -> tuple[Classifier, Any]:
    """The base folder's encoder under a new head, and its tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    # Eager attention traces to ONNX with the TorchScript exporter (the served model).
    encoder = AutoModel.from_pretrained(base, attn_implementation="eager")
    tokenizer = AutoTokenizer.from_pretrained(base, use_fast=True)
    tokenizer.model_max_length = max_len
    return Classifier(encoder, n_classes, dropout), tokenizer


def _batch(tokenizer: Any, texts: list[str], max_len: int) -> dict[str, Tensor]:
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}


def evaluate_texts(
    model: Classifier, tokenizer: Any, texts: list[str], y: np.ndarray, max_len: int
) -> dict[str, float]:
    """val_loss, accuracy and macro F1 on (texts, y), in eval mode."""
    model.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(texts), EVAL_BATCH):
            outs.append(model(**_batch(tokenizer, texts[start : start + EVAL_BATCH], max_len)))
    logits = torch.cat(outs)
    pred = logits.argmax(1).numpy()
    return {
        "val_loss": float(functional.cross_entropy(logits, torch.from_numpy(y))),
        "accuracy": float(np.mean(pred == y)),
        "f1": f1_macro(y, pred),
    }


def finetune(
    base: Path,
    data: TextData,
    hyper: Hyper,
    callbacks: Callbacks,
    *,
    max_len: int = 128,
    dropout: float = 0.1,
    resume: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
) -> FinetuneResult:
    """Fine-tune ``base`` (a Hugging Face folder) + a new head on ``data``.

    ``info``: plain data stored in every checkpoint (e.g. which base version it started from).
    """
    torch.manual_seed(hyper.seed)
    model, tokenizer = load_base(base, len(data.classes), dropout, max_len)
    optimizer = make_optimizer(hyper, model)
    scheduler = make_scheduler(hyper, optimizer, hyper.epochs)
    y_train = torch.from_numpy(data.y_train)

    epoch, history, elapsed = 0, [], 0.0
    best: dict[str, Any] = {"loss": float("inf"), "epoch": 0, "bad_epochs": 0, "model": None}
    if resume is not None:
        if list(resume.get("classes", [])) != data.classes:
            raise ValueError("the checkpoint's classes differ from the dataset's")
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["rng"])
        epoch, history = int(resume["epoch"]), list(resume["history"])
        best, elapsed = dict(resume["best"]), float(resume["elapsed"])
        callbacks.log(f"resuming after epoch {epoch}")
    started = time.monotonic() - elapsed

    code = 0
    while epoch < hyper.epochs and not code:
        t0 = time.monotonic()
        order = torch.randperm(
            data.n_train, generator=torch.Generator().manual_seed(hyper.seed * 100_003 + epoch)
        ).tolist()
        model.train()
        total = 0.0
        for start in range(0, len(order), hyper.batch_size):
            rows = order[start : start + hyper.batch_size]
            logits = model(**_batch(tokenizer, [data.x_train[i] for i in rows], max_len))
            loss = functional.cross_entropy(logits, y_train[rows])
            penalty = hyper.l1 * l1_penalty(model) if hyper.l1 else 0.0
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss + penalty)
            nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            total += loss.item() * len(rows)
            if code := stop_code(hyper, callbacks, started, best):
                break
        if code:
            break  # an unfinished epoch is not counted, checkpointed or reported
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        epoch += 1
        metrics = evaluate_texts(model, tokenizer, data.x_val, data.y_val, max_len)
        best = update_best(best, hyper, epoch, metrics["val_loss"], model)
        record = {"epoch": float(epoch), "train_loss": total / max(data.n_train, 1), **metrics}
        history.append({**record, "lr": lr, "seconds": time.monotonic() - t0})
        callbacks.progress(epoch, hyper.epochs, record)
        code = stop_code(hyper, callbacks, started, best, True)
        if code or epoch % hyper.checkpoint_every == 0 or epoch == hyper.epochs:
            # The callback serialises at once (weights are large: no defensive copy).
            callbacks.checkpoint({
                "format": CHECKPOINT_FORMAT, "kind": "finetune", "epoch": epoch,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                "best": best, "history": history, "elapsed": time.monotonic() - started,
                "classes": data.classes, **(info or {}),
            })  # fmt: skip

    reason = STOP_REASONS[code]
    if reason != "completed":
        callbacks.log(f"stopped after epoch {epoch}: {reason}")
    if best["model"] is not None:  # early stopping keeps the best epoch's weights
        model.load_state_dict(best["model"])
    metrics = evaluate_texts(model, tokenizer, data.x_val, data.y_val, max_len)
    majority = int(np.argmax(np.bincount(data.y_train, minlength=len(data.classes))))
    metrics["baseline_accuracy"] = float(np.mean(data.y_val == majority))
    if history:
        metrics["train_loss"] = history[-1]["train_loss"]
    return FinetuneResult(
        model=model.eval(), tokenizer=tokenizer, classes=data.classes, metrics=metrics,
        history=history, epochs_run=epoch, stop_reason=reason, max_len=max_len,
    )  # fmt: skip


def save_classifier(result: FinetuneResult, folder: Path) -> Path:
    """Write the fine-tuned model as a Hugging Face folder (no ONNX); returns ``folder``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    encoder = result.model.encoder
    config = encoder.config  # id2label/label2id name the outputs the runtime serves
    config.id2label = dict(enumerate(result.classes))
    config.label2id = {name: i for i, name in enumerate(result.classes)}
    encoder.save_pretrained(folder)
    result.tokenizer.save_pretrained(folder)
    head = {k: v.detach().contiguous() for k, v in result.model.head.state_dict().items()}
    save_file(head, str(folder / "classifier.safetensors"))
    doc = {
        "head": "mean_pooling_linear",
        "pooling": "mean",
        "classes": result.classes,
        "max_len": result.max_len,
        "weights": "classifier.safetensors",
        "inputs": ["input_ids", "attention_mask", "token_type_ids"],
        "output": "logits",
    }
    (folder / "classifier.json").write_text(json.dumps(doc, indent=2))
    return folder
