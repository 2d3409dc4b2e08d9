"""Hugging Face causal LMs (GPT-2, Llama, ... any ``AutoModelForCausalLM``) for text generation.

Loaded for format ``transformers`` with task ``text-generation``. The runtime owns
the model, the tokenizer and everything about one request that does not depend
on the batch: prompt rendering and tokenization, the request's sampling
parameters, the context length. Decoding many sequences at once is the
continuous-batching engine's job (``modelplane.serving.scheduler``), which the
worker process runs on top of this runtime.

``predict`` (OIP v2 / TF Serving on a text model) takes ``text_input`` (string
[-1]) and returns ``text_output`` (string [-1]): a greedy completion of each
prompt, without the prompt, of at most ``predict_max_tokens`` tokens
(``RuntimeOptions.extra``, default 64).

Chat messages are rendered with the model's chat template; a model without one
gets the same default that ``causal_lm`` training saves with its tokenizers
(ChatML, ``modelplane.training.tokenizer.DEFAULT_CHAT_TEMPLATE``), and replies
rendered that way also stop at ``<|im_end|>``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from modelplane.errors import BadRequest, InvalidInput
from modelplane.runtimes.base import Arrays, Runtime, RuntimeOptions
from modelplane.runtimes.text import model_root
from modelplane.schemas.registry import Signature, TensorSpec
from modelplane.training.tokenizer import DEFAULT_CHAT_TEMPLATE, IM_END

TASKS = frozenset({"text-generation", "causal-lm"})
INPUT, OUTPUT = "text_input", "text_output"
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")
MAX_LOGPROBS = 20
MAX_STOPS = 16


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence is decoded; temperature 0 is greedy."""

    max_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logprobs: int | None = None

    @property
    def penalised(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty) or (
            self.repetition_penalty != 1.0
        )


def _number(req: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = req.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{name} must be a number, got {value!r}")
    if not lo <= float(value) <= hi:
        raise InvalidInput(f"{name} must be between {lo} and {hi}, got {value}")
    return float(value)


def _integer(req: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = req.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise InvalidInput(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def sampling_params(req: dict[str, Any]) -> SamplingParams:
    """Check a generate request's knobs (the contract's REQ) and freeze them."""
    stop = req.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise InvalidInput("stop must be a string or a list of strings")
    if len(stop) > MAX_STOPS:
        raise InvalidInput(f"at most {MAX_STOPS} stop sequences are allowed, got {len(stop)}")
    return SamplingParams(
        max_tokens=_integer(req, "max_tokens", 1, 1 << 30),
        temperature=_number(req, "temperature", 0.0, 0.0, 100.0),
        top_p=_number(req, "top_p", 1.0, 1e-9, 1.0),
        top_k=_integer(req, "top_k", 0, 1 << 30) or 0,
        seed=_integer(req, "seed", -(1 << 63), (1 << 63) - 1),
        stop=tuple(s for s in stop if s),
        presence_penalty=_number(req, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=_number(req, "frequency_penalty", 0.0, -2.0, 2.0),
        repetition_penalty=_number(req, "repetition_penalty", 1.0, 1e-3, 100.0),
        logprobs=_integer(req, "logprobs", 0, MAX_LOGPROBS),
    )


def _context_length(config: Any, tokenizer: Any) -> int:
    for key in CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else 2048


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    found: set[int] = set()
    for value in (
        getattr(model.generation_config, "eos_token_id", None),
        model.config.eos_token_id,
        tokenizer.eos_token_id,
    ):
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, list | tuple):
            found.update(int(v) for v in value)
    return frozenset(found)


class GenerationRuntime(Runtime):
    format = "transformers"

    def __init__(self, model: Any, tokenizer: Any, options: RuntimeOptions) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.options = options
        self.context_length = _context_length(model.config, tokenizer)
        self.eos_ids = _eos_ids(model, tokenizer)
        head = model.get_output_embeddings()  # logits may be wider than the config's vocab
        self.vocab_size = (
            int(head.weight.shape[0])
            if head is not None
            else int(model.config.get_text_config().vocab_size)
        )
        self.chat_template: str | None = getattr(tokenizer, "chat_template", None) or None
        self.model_type = str(getattr(model.config, "model_type", "") or "")
        self.predict_max_tokens = int(options.extra.get("predict_max_tokens", 64))
        # Read once: inspect.signature costs milliseconds, an engine is made per predict batch.
        self.forward_params = frozenset(inspect.signature(model.forward).parameters)
        # The Rust tokenizer decodes without the Python wrapper's per-call overhead.
        self._fast = getattr(tokenizer, "backend_tokenizer", None)

    @classmethod
    def load(cls, artifact_dir: Path, options: RuntimeOptions) -> GenerationRuntime:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from modelplane.runtimes.torch_common import set_threads

        set_threads(options)
        root = model_root(artifact_dir)
        try:
            tokenizer = AutoTokenizer.from_pretrained(root)
            # float32: half precision matmuls are slow (or missing) on CPU.
            model = AutoModelForCausalLM.from_pretrained(root, dtype=torch.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise InvalidInput(f"cannot load a causal LM from this folder: {exc}") from exc
        model.eval()  # type: ignore[no-untyped-call]
        return cls(model, tokenizer, options)

    # -- one request ---------------------------------------------------------------------

    def render(self, messages: Any) -> str:
        """Chat messages -> prompt text, with the model's template or the default one."""
        if not isinstance(messages, list) or not messages:
            raise InvalidInput("messages must be a non-empty list")
        for m in messages:
            if not (
                isinstance(m, dict)
                and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)
            ):
                raise InvalidInput("each message needs a string role and a string content")
        try:
            text = self.tokenizer.apply_chat_template(
                messages,
                chat_template=self.chat_template or DEFAULT_CHAT_TEMPLATE,
                tokenize=False,
                add_generation_prompt=True,
            )
        except Exception as exc:
            raise InvalidInput(f"the chat template refused these messages: {exc}") from exc
        return str(text)

    def chat_params(self, params: SamplingParams) -> SamplingParams:
        """Replies rendered with the default (ChatML) template end at ``<|im_end|>``, also for a
        tokenizer that has no such token."""
        if self.chat_template or IM_END in params.stop:
            return params
        return replace(params, stop=(*params.stop, IM_END))

    def prompt_ids(self, req: dict[str, Any]) -> list[int]:
        """Tokenize a request's prompt (or rendered messages) and check it fits the context."""
        if req.get("messages") is not None:
            # Rendered templates carry their own BOS; adding one would double it.
            ids = self.encode(self.render(req["messages"]), special=False)
        else:
            prompt = req.get("prompt")
            if not isinstance(prompt, str):
                raise InvalidInput("a generate request needs a string prompt or messages")
            ids = self.encode(prompt, special=True)
        if not ids:
            bos = self.tokenizer.bos_token_id
            if bos is None:
                raise InvalidInput("the prompt is empty and this model has no BOS token")
            ids = [int(bos)]
        if len(ids) >= self.context_length:
            raise BadRequest(
                f"prompt is {len(ids)} tokens; this model's context is {self.context_length} tokens"
            )
        return ids

    def encode(self, text: str, special: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        if self._fast is not None:
            return str(self._fast.decode(ids, skip_special_tokens=True))
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def generation_info(self, max_seqs: int, max_cached_tokens: int) -> dict[str, Any]:
        """The ``generation`` object of the worker's load reply."""
        return {
            "context_length": self.context_length,
            "max_seqs": max_seqs,
            "max_cached_tokens": max_cached_tokens,
            "chat_template": self.chat_template is not None,
            "model_type": self.model_type,
        }

    # -- the Runtime shape (OIP v2 / TF Serving) -------------------------------------------

    def metadata(self) -> Signature:
        return Signature(
            inputs=[TensorSpec(name=INPUT, dtype="string", shape=[-1])],
            outputs=[TensorSpec(name=OUTPUT, dtype="string", shape=[-1])],
        )

    def predict(self, inputs: Arrays) -> Arrays:
        arr = inputs.get(INPUT)
        if arr is None:
            raise InvalidInput(f"missing input {INPUT!r}")
        if arr.ndim != 1:
            raise InvalidInput(f"input {INPUT!r} must be a 1-D list of strings")
        prompts = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in arr]
        if not all(isinstance(p, str) for p in prompts):
            raise InvalidInput(f"input {INPUT!r} must hold strings")
        texts = self.complete([self.prompt_ids({"prompt": p}) for p in prompts])
        return {OUTPUT: np.array(texts, dtype=object)}

    def complete(self, prompts: list[list[int]], max_tokens: int | None = None) -> list[str]:
        """Greedy completions of a batch of tokenized prompts, in one left-padded generate()."""
        import torch

        if not prompts:
            return []
        longest = max(len(p) for p in prompts)
        budget = min(max_tokens or self.predict_max_tokens, self.context_length - longest)
        pad = self.tokenizer.pad_token_id
        pad = int(pad if pad is not None else min(self.eos_ids, default=0))
        ids = torch.full((len(prompts), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), longest), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, longest - len(p) :] = torch.tensor(p)
            mask[i, longest - len(p) :] = 1
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=budget,
                pad_token_id=pad,
                eos_token_id=sorted(self.eos_ids) or None,
            )
        texts = []
        for row in out[:, longest:].tolist():
            cut = next((i for i, t in enumerate(row) if t in self.eos_ids), len(row))
            texts.append(self.decode(row[:cut]))
        return texts

    def warmup(self) -> None:
        self.complete([self.encode("warm up") or [0]], max_tokens=2)
