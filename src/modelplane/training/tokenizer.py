"""Tokenizers and chat rendering for causal language models.

- ``train_bpe``: a byte-level BPE (GPT-2's scheme: any text round-trips, no
  unknown token) trained on the fly with the ``tokenizers`` library, wrapped
  as a Hugging Face fast tokenizer whose ``save_pretrained`` folder any
  transformers loader reads back.
- ``DEFAULT_CHAT_TEMPLATE``: ChatML, used when a model brings no chat template
  of its own. It is saved with the tokenizer (``tokenizer_config.json``) so a
  server renders chat exactly as training did::

      <|im_start|>system\\nYou are terse.<|im_end|>\\n
      <|im_start|>user\\nhi<|im_end|>\\n
      <|im_start|>assistant\\nhello<|im_end|>\\n

  and, for a reply to be generated, ends with ``<|im_start|>assistant\\n``.
  ``<|im_end|>`` is a single special token that generation stops at.
- ``render_chat``: one conversation as text plus the character spans of the
  assistant replies (with their end marker), for a loss on replies only. The
  spans come from rendering growing prefixes of the conversation, so any
  template whose renderings of prefixes are prefixes of the whole works.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

END_OF_TEXT = "<|endoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [END_OF_TEXT, IM_START, IM_END]
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
ROLES = ("system", "user", "assistant", "tool")


def train_bpe(texts: Iterable[str], vocab_size: int, *, chat: bool = False) -> Any:
    """A byte-level BPE fast tokenizer of at most ``vocab_size`` tokens trained on ``texts``.

    ``<|endoftext|>`` is bos, eos and pad; with ``chat`` the ChatML template is set and eos
    is ``<|im_end|>`` (the end of a reply, where generation stops).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token=END_OF_TEXT,
        eos_token=IM_END if chat else END_OF_TEXT,
        pad_token=END_OF_TEXT,
    )
    if chat:
        fast.chat_template = DEFAULT_CHAT_TEMPLATE
    return fast


def ensure_chat(tokenizer: Any) -> bool:
    """Give a tokenizer without a chat template the default one; True if tokens were added.

    ChatML's markers become special tokens (so that ``<|im_end|>`` is one token to stop at);
    the caller must then resize the model's embeddings to ``len(tokenizer)``.
    """
    if tokenizer.chat_template:
        return False
    before = len(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": [IM_START, IM_END]})
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return len(tokenizer) > before


def check_messages(messages: object, row: int) -> list[dict[str, str]]:
    """``messages`` as a list of ``{"role", "content"}`` strings; ValueError naming the row."""
    where = f"data: row {row}: messages"
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes) or not messages:
        raise ValueError(f"{where} must be a non-empty list of {{role, content}} objects")
    out = []
    for m in messages:
        if not isinstance(m, Mapping) or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: each message needs a string 'content'")
        role = m.get("role")
        if role not in ROLES:
            raise ValueError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        out.append({"role": str(role), "content": str(m["content"])})
    return out


def _render(tokenizer: Any, messages: list[dict[str, str]], prompt: bool) -> str:
    text: str = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=prompt
    )
    return text


def render_chat(
    tokenizer: Any, messages: list[dict[str, str]]
) -> tuple[str, list[tuple[int, int]]]:
    """The conversation as text, and the [start, end) character spans of assistant replies."""
    full = _render(tokenizer, messages, False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], True) if i else ""
        through = _render(tokenizer, messages[: i + 1], False)
        if not (full.startswith(through) and through.startswith(before)):
            raise ValueError(
                "the chat template does not render a conversation's prefixes as prefixes "
                "of it; data.assistant_only_loss needs one that does"
            )
        spans.append((len(before), len(through)))
    return full, spans
