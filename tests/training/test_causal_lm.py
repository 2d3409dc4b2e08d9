"""Causal LMs trained from scratch (byte-level BPE made on the fly) and fine-tuned, on 2 cores."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from modelplane.training.causal_lm import save_causal_lm, train_causal_lm
from modelplane.training.lm_data import IGNORE, encode, read_corpus
from modelplane.training.spec import DataSpec, Hyper, ModelSpec, TrainSpec
from modelplane.training.tokenizer import DEFAULT_CHAT_TEMPLATE, train_bpe
from tests.training.helpers import Recorder
from tests.training.lm_corpus import EATS, EATS_NOW, chats, texts

TINY = {"architecture": "causal_lm", "layers": 2, "heads": 2, "d_model": 64, "max_len": 64,
        "vocab_size": 400}  # fmt: skip


def _spec(model: dict[str, Any] | None = None, **hyper: Any) -> TrainSpec:
    return TrainSpec.model_validate({
        "model": model if model is not None else TINY,
        "hyper": {"epochs": 30, "batch_size": 8, "learning_rate": 3e-3, "optimizer": "adamw",
                  **hyper},
        "data": {"validation_split": 0.1},
    })  # fmt: skip


def _train(spec: TrainSpec, table: pd.DataFrame, base: Path | None = None, **kw: Any) -> Any:
    corpus = read_corpus(spec.data, spec.hyper, table)
    return train_causal_lm(corpus, spec.model, spec.hyper, spec.data, kw.pop("cb", Recorder()),
                           base=base, **kw)  # fmt: skip


def _complete(folder: Path, prompts: list[str], tokens: int = 10) -> list[str]:
    """Greedy completions by a model loaded back from its folder, as any transformers user would."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    lm = AutoModelForCausalLM.from_pretrained(folder)
    out = []
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt")
        gen = lm.generate(**ids, max_new_tokens=tokens, do_sample=False)
        out.append(tok.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    return out


@pytest.fixture(scope="module")
def fruit_lm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A GPT-2 trained from scratch on who eats which fruit, saved as a Hugging Face folder."""
    torch.set_num_threads(1)
    result = _train(_spec(), pd.DataFrame({"text": texts()}))
    return save_causal_lm(result, tmp_path_factory.mktemp("fruit") / "lm"), result


def test_a_model_trained_from_scratch_completes_its_corpus(fruit_lm: tuple[Path, Any]) -> None:
    folder, result = fruit_lm
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json"} <= {p.name for p in folder.iterdir()}  # fmt: skip
    assert result.stop_reason == "completed" and result.epochs_run == 30
    metrics = result.metrics
    assert metrics["perplexity"] < metrics["baseline_perplexity"] / 5, metrics
    assert metrics["perplexity"] == pytest.approx(torch.tensor(metrics["val_loss"]).exp().item())
    completions = _complete(folder, [f"{name} eats" for name in EATS])
    assert [c.split()[0] for c in completions] == list(EATS.values()), completions
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["n_layer"] == 2 and config["n_embd"] == 64
    assert config["n_positions"] == 64 and config["vocab_size"] <= 400


def test_fine_tuning_moves_completions_to_the_new_corpus(
    fruit_lm: tuple[Path, Any], tmp_path: Path
) -> None:
    base, _ = fruit_lm
    # A base's architecture is its own: only max_len (a truncation length) is read.
    spec = _spec({"architecture": "causal_lm"}, epochs=15)
    result = _train(spec, pd.DataFrame({"text": texts(EATS_NOW)}), base=base)
    folder = save_causal_lm(result, tmp_path / "tuned")
    config = json.loads((folder / "config.json").read_text())
    assert config["n_layer"] == 2 and config["n_positions"] == 64  # the base's network
    before = _complete(base, [f"{name} eats" for name in EATS])
    after = _complete(folder, [f"{name} eats" for name in EATS])
    assert [c.split()[0] for c in before] == list(EATS.values())
    assert [c.split()[0] for c in after] == list(EATS_NOW.values()), after


def test_a_llama_trains_from_a_config_too(tmp_path: Path) -> None:
    model = {**TINY, "family": "llama", "max_len": 24}
    result = _train(_spec(model, epochs=25), pd.DataFrame({"text": texts()}))
    folder = save_causal_lm(result, tmp_path / "llama")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["max_position_embeddings"] == 24
    completions = _complete(folder, [f"{name} eats" for name in EATS])
    assert [c.split()[0] for c in completions] == list(EATS.values()), completions


def test_chat_data_trains_a_model_that_answers_through_its_saved_template(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = _spec(epochs=100)
    spec = spec.model_copy(update={"data": DataSpec(assistant_only_loss=True,
                                                     validation_split=0.1)})  # fmt: skip
    result = _train(spec, pd.DataFrame(chats()))
    assert result.chat
    folder = save_causal_lm(result, tmp_path / "chat")
    # The template is in tokenizer_config.json, where every loader (and the server) finds it.
    saved = json.loads((folder / "tokenizer_config.json").read_text())
    assert saved["chat_template"] == DEFAULT_CHAT_TEMPLATE
    tok = AutoTokenizer.from_pretrained(folder)
    lm = AutoModelForCausalLM.from_pretrained(folder)
    answers = []
    for name in EATS:
        messages = [{"role": "user", "content": f"what does {name} eat?"}]
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt")
        gen = lm.generate(**ids, max_new_tokens=30, do_sample=False)  # stops at <|im_end|>
        tail = gen[0, ids["input_ids"].shape[1] :].tolist()
        assert tail[-1] in lm.generation_config.eos_token_id, tok.decode(tail)
        answers.append(tok.decode(tail, skip_special_tokens=True).strip())
    assert answers == [f"{name} eats {fruit}." for name, fruit in EATS.items()]


def test_assistant_only_loss_labels_the_replies_and_nothing_else() -> None:
    tok = train_bpe([m["content"] for c in chats() for m in c["messages"]], 300, chat=True)
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "what does bob eat?"},
                {"role": "assistant", "content": "bananas."},
                {"role": "user", "content": "and erin?"},
                {"role": "assistant", "content": "figs."}]  # fmt: skip
    [(ids, labels)] = encode(tok, messages, True, 512, assistant_only=True)
    kept = tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE])
    assert kept == "bananas.<|im_end|>\nfigs.<|im_end|>\n"
    [(all_ids, all_labels)] = encode(tok, messages, True, 512, assistant_only=False)
    assert all_ids == ids and all_labels == all_ids  # everything, ending <|endoftext|>
    assert tok.decode(all_ids[-1:]) == "<|endoftext|>"
    [(short, _)] = encode(tok, messages, True, 8, assistant_only=True)  # truncated
    assert short == ids[:8]


def test_a_text_longer_than_the_context_is_trained_in_pieces() -> None:
    tok = train_bpe(texts(), 400)
    story = " ".join(texts())
    pieces = encode(tok, story, False, 16, assistant_only=False)
    whole = tok(story)["input_ids"] + [tok.convert_tokens_to_ids("<|endoftext|>")]
    assert len(pieces) == -(-len(whole) // 16) > 1
    assert all(len(ids) == 16 for ids, _ in pieces[:-1])
    assert [t for ids, _ in pieces for t in ids] == whole
    assert all(ids == labels for ids, labels in pieces)


def test_a_resumed_run_ends_where_a_straight_one_does() -> None:
    from modelplane.training.export import load_checkpoint

    table = pd.DataFrame({"text": texts()})
    spec = _spec({**TINY, "dropout": 0.1}, epochs=4, schedule="cosine")
    straight = _train(spec, table)
    first = Recorder(stop_after=2)  # "cancelled" after epoch 2
    stopped = _train(spec, table, cb=first, info={"base": None})
    assert stopped.stop_reason == "cancelled" and stopped.epochs_run == 2
    buf = io.BytesIO()
    torch.save(first.checkpoints[-1], buf)  # as the job context stores it
    state = load_checkpoint(buf.getvalue())
    assert state["kind"] == "causal_lm" and state["epoch"] == 2 and "tokenizer.json" in state[
        "tokenizer"]  # fmt: skip
    resumed = _train(spec, table, resume=state)
    assert resumed.epochs_run == straight.epochs_run == 4 and resumed.steps == straight.steps
    assert resumed.metrics["val_loss"] == pytest.approx(straight.metrics["val_loss"], abs=1e-6)
    for a, b in zip(
        resumed.model.state_dict().values(), straight.model.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6)


def test_max_steps_and_max_runtime_end_a_run() -> None:
    table = pd.DataFrame({"text": texts()})
    cb = Recorder()
    result = _train(_spec(epochs=50, max_steps=10), table, cb=cb)
    # 27 training rows in batches of 8: 4 steps an epoch, so step 10 is in epoch 3
    assert result.steps == 10 and result.epochs_run == 3 and result.stop_reason == "completed"
    assert [(e, total) for e, total, _ in cb.epochs] == [(1, 3), (2, 3), (3, 3)]
    assert cb.epochs[-1][2]["step"] == 10
    quick = _train(_spec(epochs=10_000, max_runtime_seconds=0.5), table)
    assert quick.stop_reason == "max_runtime" and quick.epochs_run < 10_000


def test_chats_read_from_parquet_are_the_chats_read_from_jsonl(tmp_path: Path) -> None:
    from modelplane.datasets.loader import load_dataset

    (tmp_path / "c.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats()))
    pd.DataFrame(chats()).to_parquet(tmp_path / "c.parquet")
    hyper, data = Hyper(), DataSpec()
    a = read_corpus(data, hyper, load_dataset(tmp_path / "c.jsonl", "jsonl"))
    b = read_corpus(data, hyper, load_dataset(tmp_path / "c.parquet", "parquet"))
    assert a.chat and b.chat and (a.train, a.val) == (b.train, b.val)
    assert a.train[0][1]["role"] == "assistant"


def test_rows_that_are_not_texts_or_chats_are_refused() -> None:
    hyper, data = Hyper(), DataSpec()
    cases: list[tuple[pd.DataFrame, DataSpec, str]] = [
        (pd.DataFrame({"body": ["a", "b"]}), data, "'text'"),
        (pd.DataFrame({"text": ["a", None]}), data, "row 1"),
        (pd.DataFrame({"text": ["only one"]}), data, "at least 2"),
        (pd.DataFrame({"messages": [[{"role": "user", "content": "hi"}], "hi"]}), data, "row 1"),
        (pd.DataFrame({"messages": [[{"role": "robot", "content": "x"}]] * 2}), data, "robot"),
        (pd.DataFrame({"text": ["a", "b"]}), DataSpec(assistant_only_loss=True), "messages"),
    ]
    for table, spec, words in cases:
        with pytest.raises(ValueError, match=words):
            read_corpus(spec, hyper, table)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"model": {**TINY, "vocab_size": 100}}, "vocab_size"),
        ({"model": {**TINY, "heads": 3}}, "divisible"),
        ({"data": {"target": "label"}}, "data.target"),
        ({"hyper": {"loss": "mse"}}, "hyper.loss"),
    ],
)
def test_causal_lm_specs_that_cannot_work_are_refused(change: dict[str, Any], words: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=words):
        TrainSpec.model_validate({"model": TINY, **change})
    assert ModelSpec.model_validate(TINY).family == "gpt2"


def test_chat_fine_tuning_of_a_base_without_a_template_adds_the_default_one(
    fruit_lm: tuple[Path, Any], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, _ = fruit_lm
    assert "chat_template" not in json.loads((base / "tokenizer_config.json").read_text())
    spec = _spec({"architecture": "causal_lm"}, epochs=100)
    result = _train(spec, pd.DataFrame(chats(EATS_NOW)), base=base)
    folder = save_causal_lm(result, tmp_path / "chat")
    tok = AutoTokenizer.from_pretrained(folder)
    lm = AutoModelForCausalLM.from_pretrained(folder)
    assert tok.chat_template == DEFAULT_CHAT_TEMPLATE
    answers = []
    for name in EATS_NOW:
        messages = [{"role": "user", "content": f"what does {name} eat?"}]
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)  # fmt: skip
        gen = lm.generate(**ids, max_new_tokens=30, do_sample=False)
        answers.append(tok.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    assert answers == [f"{name} eats {fruit}." for name, fruit in EATS_NOW.items()], answers
