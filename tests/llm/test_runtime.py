"""The causal-LM runtime: loading by task, signature, predict, chat templates, context, UTF-8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelplane.errors import InvalidInput
from modelplane.runtimes import RuntimeOptions, runtime_class
from modelplane.runtimes.generation import GenerationRuntime, sampling_params
from modelplane.runtimes.sampling import TextStream
from modelplane.serving.scheduler import Engine
from tests.llm.conftest import drain, text


def test_task_or_architecture_picks_the_generation_runtime(gpt2_dir: Path) -> None:
    rt = runtime_class("transformers").load(gpt2_dir, RuntimeOptions())  # no task: GPT2LMHeadModel
    assert isinstance(rt, GenerationRuntime)
    with pytest.raises(InvalidInput, match="text-generation"):
        runtime_class("transformers").load(gpt2_dir, RuntimeOptions(task="fill-mask"))


def test_info_and_signature(gpt2: GenerationRuntime, llama: GenerationRuntime) -> None:
    assert gpt2.generation_info(8, 1024) == {
        "context_length": 128,
        "max_seqs": 8,
        "max_cached_tokens": 1024,
        "chat_template": False,
        "model_type": "gpt2",
    }
    assert llama.generation_info(2, 64)["chat_template"] is True
    assert llama.generation_info(2, 64)["model_type"] == "llama"
    sig = gpt2.metadata()
    assert [(s.name, s.dtype) for s in sig.inputs] == [("text_input", "string")]
    assert [(s.name, s.dtype) for s in sig.outputs] == [("text_output", "string")]


def test_predict_completes_a_batch_greedily(trained: GenerationRuntime) -> None:
    prompts = ["the cat sat", "one two three four", "héllo wörld,"]
    out = trained.predict({"text_input": np.array(prompts, dtype=object)})["text_output"]
    assert out.tolist() == [
        " on the mat and looked at the dog.",
        " five six seven eight nine ten.",
        " ça va? naïve café ünïcode ☃ snow ✓ check.",
    ]
    engine = Engine(trained)
    engine.submit(0, {"prompt": "one two three four"})
    assert text(drain(engine)[0]) == out[1]  # OIP and the engine agree
    with pytest.raises(InvalidInput, match="text_input"):
        trained.predict({"text": np.array(["x"], dtype=object)})


def test_chat_template_of_the_model_and_the_default(
    gpt2: GenerationRuntime, llama: GenerationRuntime
) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert gpt2.render(messages) == (
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert gpt2.chat_params(sampling_params({})).stop == ("<|im_end|>",)
    assert llama.chat_params(sampling_params({})).stop == ()
    assert llama.render(messages) == "<|system|>be brief\n<|user|>hi\n<|assistant|>"
    engine = Engine(llama)
    prompt = engine.submit("c", {"messages": messages, "max_tokens": 3})
    assert prompt == len(llama.encode(llama.render(messages), special=False))
    with pytest.raises(InvalidInput):
        gpt2.render([])


def test_text_stream_holds_back_partial_utf8_and_stop_prefixes(gpt2: GenerationRuntime) -> None:
    ids = gpt2.encode(" ☃ snow")
    assert len(ids) > len(["☃", "snow"])  # the snowman takes several byte tokens
    stream = TextStream(gpt2.decode, gpt2.encode("héllo"), ["now!"])
    pieces = [stream.push(t) for t in ids]
    assert all("\ufffd" not in p for p, _ in pieces)
    assert "".join(p for p, _ in pieces) == " ☃ s"  # "now" may still become "now!"
    assert not any(stopped for _, stopped in pieces)
    assert stream.flush() == "now"


def test_text_stream_keeps_sentencepiece_spaces() -> None:
    # Metaspace (Llama/SentencePiece-style) decoders drop the space of a leading "▁word":
    # decoding each new token alone would glue words together.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from tests.llm.tiny import CORPUS

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(
        CORPUS * 5,
        trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"], show_progress=False),
    )
    prompt = tok.encode("the cat").ids
    new = tok.encode("the cat sat on the mat and looked").ids[len(prompt) :]

    def decode(ids: list[int]) -> str:
        return str(tok.decode(ids))

    stream = TextStream(decode, prompt, [])
    out = "".join(stream.push(t)[0] for t in new) + stream.flush()
    assert out == " sat on the mat and looked"
    assert "".join(decode([t]) for t in new) != out  # the naive way loses the spaces
