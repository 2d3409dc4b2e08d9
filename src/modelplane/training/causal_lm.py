"""Training a causal language model (GPT-2 or Llama) from scratch, or fine-tuning one.

From scratch, the network is built from the spec (``model.family``, ``layers``,
``heads``, ``d_model``, context ``max_len``, ``dropout``) over a byte-level BPE
trained on the dataset's texts (``tokenizer.train_bpe``, at most
``model.vocab_size`` tokens). Fine-tuning loads a Hugging Face causal-LM
folder and its tokenizer instead; chat data on a base without a chat template
gets the default template (and its two marker tokens, the embeddings resized).

Examples come from ``lm_data`` (texts, or chat rendered with the template;
with ``data.assistant_only_loss`` only reply tokens carry loss) and train on
next-token cross-entropy. Each epoch shuffles by (seed, epoch). The
learning-rate schedule is ``Hyper.schedule`` evaluated per optimizer step
(``step_size``/``warmup_epochs`` counted in epochs); ``hyper.max_steps`` ends
training after that many steps. Gradients are clipped to norm 1.0.

The loop reports, checkpoints and stops through ``loop.Callbacks``; a
checkpoint is plain data (``torch.load(weights_only=True)``)::

    format, kind="causal_lm", epoch, step, model, optimizer, scheduler, rng,
    best {loss, epoch, bad_epochs, model|None}, history, elapsed,
    tokenizer {file name: text}, and the caller's ``info`` keys

and passing it back as ``resume`` continues the run exactly. Metrics are
``train_loss``, ``val_loss``, ``perplexity`` (exp of the validation loss per
token) and ``baseline_perplexity`` (a unigram model of the training tokens).
``save_causal_lm`` writes the servable folder.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from modelplane.training.lm_data import IGNORE, Corpus, build_tokenizer, encode, end_id
from modelplane.training.loop import STOP_REASONS, Callbacks, stop_code, update_best
from modelplane.training.optim import make_optimizer
from modelplane.training.spec import DataSpec, Hyper, ModelSpec
from modelplane.training.tokenizer import END_OF_TEXT, IM_END

CHECKPOINT_FORMAT = 1
MAX_GRAD_NORM = 1.0
EVAL_BATCH = 32


def build_model(model: ModelSpec, tokenizer: Any, base: Path | None) -> Any:
    """A new GPT-2 / Llama sized by ``model``, or the base's weights (embeddings resized)."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    if base is not None:
        # float32: CPU training in half precision is slow or unsupported.
        lm: Any = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        rows = int(lm.get_input_embeddings().weight.shape[0])
        if len(tokenizer) > rows:
            lm.resize_token_embeddings(len(tokenizer))
        return lm
    ids = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": end_id(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
    }
    config: Any
    if model.family == "llama":
        config = LlamaConfig(
            hidden_size=model.d_model, intermediate_size=4 * model.d_model,
            num_hidden_layers=model.layers, num_attention_heads=model.heads,
            num_key_value_heads=model.heads, max_position_embeddings=model.max_len,
            attention_dropout=model.dropout, tie_word_embeddings=True, **ids,
        )  # fmt: skip
    else:
        config = GPT2Config(
            n_embd=model.d_model, n_layer=model.layers, n_head=model.heads,
            n_positions=model.max_len, resid_pdrop=model.dropout, embd_pdrop=model.dropout,
            attn_pdrop=model.dropout, **ids,
        )  # fmt: skip
    return AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]


def context_of(config: Any) -> int | None:
    """The longest sequence a Hugging Face config allows, when it says."""
    for key in ("n_positions", "max_position_embeddings", "n_ctx", "max_seq_len"):
        value = getattr(config, key, None) if not isinstance(config, dict) else config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _batch(rows: list[tuple[list[int], list[int]]], pad: int) -> dict[str, Tensor]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (i, lab) in enumerate(rows):
        ids[r, : len(i)] = torch.tensor(i)
        labels[r, : len(lab)] = torch.tensor(lab)
        mask[r, : len(i)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _loss_sum(lm: Any, batch: dict[str, Tensor]) -> tuple[Tensor, int]:
    """Summed next-token loss over the labelled positions, and how many there were."""
    logits = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    target = batch["labels"][:, 1:]
    loss = functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), target.reshape(-1),
        ignore_index=IGNORE, reduction="sum",
    )  # fmt: skip
    return loss, int((target != IGNORE).sum())


def evaluate_lm(lm: Any, rows: list[tuple[list[int], list[int]]], pad: int) -> dict[str, float]:
    """val_loss (mean per predicted token) and perplexity, in eval mode."""
    lm.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), EVAL_BATCH):
            loss, n = _loss_sum(lm, _batch(rows[start : start + EVAL_BATCH], pad))
            total, count = total + float(loss), count + n
    val = total / max(count, 1)
    return {"val_loss": val, "perplexity": math.exp(min(val, 50.0))}


def unigram_perplexity(train: list[tuple[list[int], list[int]]],
                       val: list[tuple[list[int], list[int]]], vocab: int) -> float:  # fmt: skip
    """A trivial baseline: each token predicted by its training frequency (add-one smoothed)."""
    counts = Counter(t for _, lab in train for t in lab[1:] if t != IGNORE)
    total = sum(counts.values()) + vocab
    scored = [t for _, lab in val for t in lab[1:] if t != IGNORE]
    nll = -sum(math.log((counts[t] + 1) / total) for t in scored) / max(len(scored), 1)
    return math.exp(min(nll, 50.0))


def step_factor(hyper: Hyper, steps_per_epoch: int, total_steps: int) -> Any:
    """``Hyper.schedule`` as a multiplier of the learning rate at optimizer step ``s``."""

    def factor(s: int) -> float:
        if hyper.schedule == "step":
            return float(hyper.gamma ** (s // (hyper.step_size * steps_per_epoch)))
        if hyper.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(s, total_steps) / total_steps))
        warmup = hyper.warmup_epochs * steps_per_epoch
        if hyper.schedule == "linear_warmup" and s < warmup:
            return (s + 1) / (warmup + 1)
        return 1.0

    return factor


def _tokenizer_files(tokenizer: Any) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp, save_jinja_files=False)
        return {p.name: p.read_text(encoding="utf-8") for p in Path(tmp).iterdir() if p.is_file()}


def _load_tokenizer(files: dict[str, str]) -> Any:
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            (Path(tmp) / Path(name).name).write_text(text, encoding="utf-8")
        return AutoTokenizer.from_pretrained(tmp, use_fast=True)


@dataclass
class CausalLMResult:
    model: Any  # a transformers PreTrainedModel with a causal-LM head, in eval mode
    tokenizer: Any  # its fast tokenizer (chat template set for chat data)
    chat: bool
    metrics: dict[str, float]  # val_loss, perplexity, baseline_perplexity, train_loss
    history: list[dict[str, float]]
    epochs_run: int
    steps: int
    stop_reason: str = "completed"  # one of loop.STOP_REASONS


def train_causal_lm(
    corpus: Corpus,
    model_spec: ModelSpec,
    hyper: Hyper,
    data: DataSpec,
    callbacks: Callbacks,
    *,
    base: Path | None = None,
    resume: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
) -> CausalLMResult:
    """Train a new causal LM (``base`` None) or fine-tune the one in folder ``base``."""
    torch.manual_seed(hyper.seed)
    if resume is not None:
        tokenizer = _load_tokenizer(dict(resume["tokenizer"]))
    else:
        tokenizer = build_tokenizer(corpus, model_spec, base)
    lm = build_model(model_spec, tokenizer, base)
    limit = min(model_spec.max_len, context_of(lm.config) or model_spec.max_len)
    only = data.assistant_only_loss

    def rows(examples: list[Any]) -> list[tuple[list[int], list[int]]]:
        return [p for ex in examples for p in encode(tokenizer, ex, corpus.chat, limit, only)]

    train_rows, val_rows = rows(corpus.train), rows(corpus.val)
    pad = int(tokenizer.pad_token_id)
    steps_per_epoch = math.ceil(len(train_rows) / hyper.batch_size)
    total_steps = min(hyper.epochs * steps_per_epoch, hyper.max_steps or 1 << 62)
    total_epochs = math.ceil(total_steps / steps_per_epoch)
    optimizer = make_optimizer(hyper, lm)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, step_factor(hyper, steps_per_epoch, total_steps)
    )

    epoch, step, history, elapsed = 0, 0, [], 0.0
    best: dict[str, Any] = {"loss": float("inf"), "epoch": 0, "bad_epochs": 0, "model": None}
    if resume is not None:
        lm.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["rng"])
        epoch, step, history = int(resume["epoch"]), int(resume["step"]), list(resume["history"])
        best, elapsed = dict(resume["best"]), float(resume["elapsed"])
        callbacks.log(f"resuming after epoch {epoch} (step {step})")
    started = time.monotonic() - elapsed

    code = 0
    while step < total_steps and not code:
        t0 = time.monotonic()
        seed = torch.Generator().manual_seed(hyper.seed * 100_003 + epoch)
        order = torch.randperm(len(train_rows), generator=seed).tolist()
        lm.train()
        loss_total, token_total, epoch_step = 0.0, 0, step
        for start in range(0, len(order), hyper.batch_size):
            batch = _batch([train_rows[i] for i in order[start : start + hyper.batch_size]], pad)
            loss_sum, n = _loss_sum(lm, batch)
            loss = loss_sum / max(n, 1)
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            nn.utils.clip_grad_norm_(lm.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            step += 1
            loss_total, token_total = loss_total + loss_sum.item(), token_total + n
            if step >= total_steps or (code := stop_code(hyper, callbacks, started, best)):
                break
        if code:
            step = epoch_step  # an unfinished epoch is not counted, checkpointed or reported
            break
        epoch += 1
        metrics = evaluate_lm(lm, val_rows, pad)
        best = update_best(best, hyper, epoch, metrics["val_loss"], lm)
        record = {"epoch": float(epoch), "step": float(step),
                  "train_loss": loss_total / max(token_total, 1), **metrics}  # fmt: skip
        lr = optimizer.param_groups[0]["lr"]
        history.append({**record, "lr": lr, "seconds": time.monotonic() - t0})
        callbacks.progress(epoch, total_epochs, record)
        code = stop_code(hyper, callbacks, started, best, True)
        if code or epoch % hyper.checkpoint_every == 0 or step >= total_steps:
            callbacks.checkpoint({
                "format": CHECKPOINT_FORMAT, "kind": "causal_lm", "epoch": epoch, "step": step,
                "model": lm.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                "best": best, "history": history, "elapsed": time.monotonic() - started,
                "tokenizer": _tokenizer_files(tokenizer), **(info or {}),
            })  # fmt: skip

    reason = STOP_REASONS[code]
    if reason != "completed":
        callbacks.log(f"stopped after epoch {epoch}: {reason}")
    if best["model"] is not None:  # early stopping keeps the best epoch's weights
        lm.load_state_dict(best["model"])
    metrics = evaluate_lm(lm, val_rows, pad)
    metrics["baseline_perplexity"] = unigram_perplexity(train_rows, val_rows, len(tokenizer))
    if history:
        metrics["train_loss"] = history[-1]["train_loss"]
    return CausalLMResult(
        model=lm.eval(), tokenizer=tokenizer, chat=corpus.chat, metrics=metrics,
        history=history, epochs_run=epoch, steps=step, stop_reason=reason,
    )  # fmt: skip


def save_causal_lm(result: CausalLMResult, folder: Path) -> Path:
    """The servable Hugging Face folder: config, safetensors weights, tokenizer (with the chat
    template in ``tokenizer_config.json``) and a ``generation_config.json`` that stops at the
    end of a text or a reply."""
    folder.mkdir(parents=True, exist_ok=True)
    lm, tok = result.model, result.tokenizer
    stops = [tok.convert_tokens_to_ids(t) for t in (tok.eos_token, IM_END, END_OF_TEXT)]
    stops = sorted({s for s in stops if isinstance(s, int) and s != tok.unk_token_id})
    lm.config.pad_token_id = tok.pad_token_id
    gen = lm.generation_config  # a base's own settings stay; where to stop is ours
    gen.eos_token_id = stops[0] if len(stops) == 1 else stops
    gen.pad_token_id = tok.pad_token_id
    lm.save_pretrained(folder, safe_serialization=True)
    tok.model_max_length = context_of(lm.config) or tok.model_max_length
    tok.save_pretrained(folder, save_jinja_files=False)
    return folder
