"""Tiny causal LMs built on the fly: a GPT-2 and a Llama with a byte-level BPE tokenizer.

Nothing is downloaded: the tokenizer is trained with the ``tokenizers`` library
on a small repetitive corpus, the model is made from a config (2 layers, 64
hidden) and trained for a few hundred steps so that greedy decoding of a corpus
prompt completes it (``CORPUS`` lines). Folders are saved with
``save_pretrained`` and cached per test run (shared by xdist workers through a
file lock), so a session pays for each build once (~5-10 s on two cores).

Other test suites may use ``tiny_model(tmp_path_factory, "gpt2")`` for a served
text-generation version.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

CORPUS = [
    "the cat sat on the mat and looked at the dog.",
    "the dog ran in the park and played with the ball.",
    "one two three four five six seven eight nine ten.",
    "red green blue yellow orange purple black white.",
    "monday tuesday wednesday thursday friday saturday sunday.",
    "alpha beta gamma delta epsilon zeta eta theta iota kappa.",
    "héllo wörld, ça va? naïve café ünïcode ☃ snow ✓ check.",
]
EOS = "<|endoftext|>"
# A chat template for the Llama model (the GPT-2 one has none: the runtime's default applies).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
KINDS = ("gpt2", "llama")


def _tokenizer(chat_template: str | None) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS, pad_token=EOS
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


def _model(kind: str, vocab: int, eos: int) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if kind == "gpt2":
        gpt2 = GPT2Config(
            vocab_size=vocab,
            n_positions=128,
            n_embd=64,
            n_layer=2,
            n_head=4,
            bos_token_id=eos,
            eos_token_id=eos,
        )
        return GPT2LMHeadModel(gpt2)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def build(kind: str, dst: Path, steps: int = 300, seed: int = 0) -> Path:
    """Build, train and save one tiny model (``kind`` in KINDS) as a HF folder at ``dst``."""
    import torch

    threads = torch.get_num_threads()
    # One thread: on a busy shared machine two spinning threads make training ~15x slower.
    torch.set_num_threads(1)
    try:
        return _build(kind, dst, steps, seed)
    finally:
        torch.set_num_threads(threads)


def _build(kind: str, dst: Path, steps: int, seed: int) -> Path:
    import torch

    torch.manual_seed(seed)
    tokenizer = _tokenizer(CHAT_TEMPLATE if kind == "llama" else None)
    eos = tokenizer.convert_tokens_to_ids(EOS)
    model = _model(kind, len(tokenizer), eos)
    lines = [tokenizer(line)["input_ids"] + [eos] for line in CORPUS]
    width = max(len(x) for x in lines)
    ids = torch.full((len(lines), width), eos, dtype=torch.long)
    labels = torch.full((len(lines), width), -100, dtype=torch.long)
    for i, line in enumerate(lines):
        ids[i, : len(line)] = torch.tensor(line)
        labels[i, : len(line)] = torch.tensor(line)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.eval()
    model.generation_config.pad_token_id = eos
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    tokenizer.save_pretrained(dst)
    return dst


def tiny_model(factory: pytest.TempPathFactory, kind: str = "gpt2") -> Path:
    """The cached folder of one tiny trained model, built on first use in this test run."""
    from filelock import FileLock

    base = factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    dst = root / f"tiny-{kind}"
    with FileLock(str(root / f"tiny-{kind}.lock")):
        if not (dst / "config.json").is_file():
            tmp = root / f"tiny-{kind}.tmp-{os.getpid()}"
            build(kind, tmp)
            tmp.rename(dst)
    return dst
