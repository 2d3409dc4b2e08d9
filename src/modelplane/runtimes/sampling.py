"""Per-sequence decoding pieces: penalties, sampling, logprobs, incremental text with stops.

The batch engine (``modelplane.serving.scheduler``) calls ``choose`` once per
step with the logits of every running sequence; rows that need nothing special
(greedy, no penalties, no logprobs) cost one batched argmax. Sampled rows draw
from their own ``torch.Generator``, seeded per request, so a seed gives the same
text whatever else shares the batch (up to floating-point differences in the
logits themselves).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from modelplane.runtimes.generation import SamplingParams

PREFIX_TOKENS = 5  # prompt tokens kept as decoding context (spaces of SentencePiece words)


class Decoding:
    """The state one sequence's token choice needs: its generator and penalty counts."""

    def __init__(self, params: SamplingParams, prompt: list[int], vocab: int) -> None:
        self.params = params
        self.generator: torch.Generator | None = None
        if params.temperature > 0:
            seed = params.seed if params.seed is not None else random.getrandbits(63)
            self.generator = torch.Generator().manual_seed(seed)
        self.counts: torch.Tensor | None = None  # generated tokens, for presence/frequency
        self.seen: torch.Tensor | None = None  # prompt + generated, for repetition
        if params.presence_penalty or params.frequency_penalty:
            self.counts = torch.zeros(vocab)
        if params.repetition_penalty != 1.0:
            self.seen = torch.zeros(vocab, dtype=torch.bool)
            self.seen[torch.tensor(prompt, dtype=torch.long).clamp(0, vocab - 1)] = True
        self.special = params.temperature > 0 or params.penalised or params.logprobs is not None

    def observe(self, token: int) -> None:
        if self.counts is not None and token < self.counts.numel():
            self.counts[token] += 1
        if self.seen is not None and token < self.seen.numel():
            self.seen[token] = True

    def penalise(self, row: torch.Tensor) -> torch.Tensor:
        p = self.params
        if self.seen is not None:
            picked = row[self.seen]
            row[self.seen] = torch.where(
                picked > 0, picked / p.repetition_penalty, picked * p.repetition_penalty
            )
        if self.counts is not None:
            row -= p.frequency_penalty * self.counts + p.presence_penalty * (self.counts > 0)
        return row

    def sample(self, row: torch.Tensor) -> int:
        p = self.params
        if p.temperature <= 0:
            return int(row.argmax())
        row = row / p.temperature
        if 0 < p.top_k < row.numel():
            kth = torch.topk(row, p.top_k).values[-1]
            row = row.masked_fill(row < kth, float("-inf"))
        if p.top_p < 1.0:
            ordered, order = torch.sort(row, descending=True)
            cum = torch.softmax(ordered, dim=-1).cumsum(-1)
            # Drop tokens once the mass before them already reaches top_p (keeps >= 1).
            drop = (cum - torch.softmax(ordered, dim=-1)) >= p.top_p
            row = row.scatter(0, order, ordered.masked_fill(drop, float("-inf")))
        probs = torch.softmax(row, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))


Logprob = dict[str, Any]


def choose(
    logits: torch.Tensor,
    states: Sequence[Decoding],
    token_text: Callable[[int], str],
) -> tuple[list[int], list[Logprob | None]]:
    """One token per row of ``logits`` [rows, vocab], and its logprob entry when asked."""
    tokens: list[int] = logits.argmax(dim=-1).tolist()
    entries: list[Logprob | None] = [None] * len(tokens)
    for i, state in enumerate(states):
        if not state.special:
            continue
        row = logits[i].float()
        if state.params.penalised:
            row = state.penalise(row.clone())
        tokens[i] = state.sample(row)
        k = state.params.logprobs
        if k is not None:
            # Logprobs of the model's distribution after penalties, before temperature.
            lp = torch.log_softmax(row, dim=-1)
            top = torch.topk(lp, min(k, lp.numel())) if k else None
            entries[i] = {
                "token": token_text(tokens[i]),
                "logprob": float(lp[tokens[i]]),
                "top": []
                if top is None
                else [
                    {"token": token_text(int(t)), "logprob": float(v)}
                    for v, t in zip(top.values.tolist(), top.indices.tolist(), strict=True)
                ],
            }
    return tokens, entries


class TextStream:
    """Incremental detokenization with stop sequences, emitting only text that is final.

    Text is held back while the last tokens decode to an incomplete UTF-8
    character (U+FFFD at the end) or while its tail could be the start of a stop
    sequence. A matched stop sequence ends the text just before it.
    """

    def __init__(self, decode: Callable[[list[int]], str], prompt: list[int], stop: Sequence[str]):
        self.decode = decode
        self.ids = list(prompt[-PREFIX_TOKENS:])
        self.prefix = 0  # ids[prefix:read] decode to context already turned into text
        self.read = len(self.ids)
        self.text = ""
        self.sent = 0  # characters of text already handed out
        self.stop = tuple(stop)
        self.longest = max((len(s) for s in self.stop), default=0)

    def push(self, token: int) -> tuple[str, bool]:
        """Add a token; returns the text now final and whether a stop sequence matched."""
        self.ids.append(token)
        before = self.decode(self.ids[self.prefix : self.read])
        after = self.decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            # Keep the decoding window short: text so far no longer changes.
            self.prefix, self.read = self.read, len(self.ids)
        if not self.stop:
            return self._take(len(self.text)), False
        found = [i for i in (self.text.find(s, self.sent) for s in self.stop) if i >= 0]
        if found:
            end = min(found)
            self.text = self.text[:end]
            return self._take(end), True
        safe = len(self.text)
        for i in range(max(self.sent, safe - self.longest + 1), safe):
            tail = self.text[i:]
            if any(s.startswith(tail) for s in self.stop):
                safe = i
                break
        return self._take(safe), False

    def flush(self) -> str:
        """What was held back for a possible stop (an incomplete character is dropped)."""
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        out = self.text[self.sent : end]
        self.sent = max(self.sent, end)
        return out
