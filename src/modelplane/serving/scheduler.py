"""The continuous-batching engine a text-generation worker runs (iteration-level scheduling).

Sequences join the running batch between decoding steps and leave as soon as
they finish or are cancelled, so a short request never waits for a long one.
One ``step()``:

1. drops cancelled sequences (waiting or running);
2. admits waiting sequences while fewer than ``max_seqs`` run and their
   reserved tokens (prompt + max_tokens, capped at the context) fit in
   ``max_cached_tokens``: those admitted together are prefilled in one
   left-padded forward (up to ``PREFILL_TOKENS``; a lone prompt runs unpadded,
   exactly as in ``generate()``) and their KV cache joins the batch's;
3. runs one batched forward over the last token of every running sequence.

The batch shares one ``DynamicCache`` (of ``kvcache.GrowingLayer``),
left-padded (TGI-v1 style): each row's tokens end at the last column; an
attention mask hides the padding and each row has its own position ids. A
joining sequence's cache is padded to the batch's length (or the batch to its)
and concatenated; rows that leave are filtered out, and columns no remaining
row needs are trimmed away.

Why not transformers' own ``ContinuousBatchingManager``: it runs in a
background thread with one global seed (a seed cannot reproduce a text
independently of the batch), has no per-request penalties or stop sequences,
and its paged attention brings nothing to CPU-sized batches; this loop is
~250 lines and lets the worker poll its socket between steps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from modelplane.errors import InvalidInput, ModelplaneError, Unavailable
from modelplane.runtimes.generation import GenerationRuntime, SamplingParams, sampling_params
from modelplane.runtimes.sampling import Decoding, Logprob, TextStream, choose
from modelplane.serving.kvcache import GrowingLayer, adopt

DEFAULT_MAX_SEQS = 8
DEFAULT_MAX_WAITING = 64
PREFILL_TOKENS = 2048  # padded prompt tokens one step may prefill (a lone prompt always goes)


@dataclass
class Event:
    """What one step tells the client of one sequence (a ``token``, ``done`` or ``error`` frame)."""

    rid: Any
    kind: str
    text: str = ""
    tokens: list[int] = field(default_factory=list)
    logprobs: list[Logprob] | None = None
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    status: int = 0
    error: str = ""

    def frame(self) -> dict[str, Any]:
        """The worker -> gateway header of LLM_CONTRACT.md."""
        if self.kind == "error":
            return {"id": self.rid, "ok": False, "status": self.status, "error": self.error}
        if self.kind == "token":
            return {
                "id": self.rid,
                "ok": True,
                "event": "token",
                "text": self.text,
                "tokens": self.tokens,
                "logprobs": self.logprobs,
            }
        return {
            "id": self.rid,
            "ok": True,
            "event": "done",
            "text": self.text,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


class Sequence:
    def __init__(self, rid: Any, prompt: list[int], params: SamplingParams, rt: GenerationRuntime):
        self.rid = rid
        self.prompt = prompt
        self.params = params
        ctx = rt.context_length
        self.limit = min(params.max_tokens or ctx, ctx - len(prompt))
        self.reserve = len(prompt) + self.limit
        self.decoding = Decoding(params, prompt, rt.vocab_size)
        self.stream = TextStream(rt.decode, prompt, params.stop)
        self.generated: list[int] = []
        self.cached = 0  # tokens of this sequence in the KV cache
        self.pending = -1  # the last chosen token, fed at the next step
        self.finish = ""


class Engine:
    """Continuous batching over one ``GenerationRuntime``; single-threaded, driven by ``step``.

    ``submit(rid, request)`` checks, tokenizes and queues a request (errors:
    ``BadRequest`` 400 over the context, ``InvalidInput`` 422 bad values,
    ``Unavailable`` 503 wait queue full) and returns its prompt tokens;
    ``cancel(rid)`` drops it before the next step; ``step()`` returns the
    ``Event``s of that step (``event.frame()`` is the contract's frame); ``busy``
    says whether any sequence waits or runs.
    """

    def __init__(
        self,
        runtime: GenerationRuntime,
        max_seqs: int = DEFAULT_MAX_SEQS,
        max_cached_tokens: int | None = None,
        max_waiting: int = DEFAULT_MAX_WAITING,
    ) -> None:
        self.rt = runtime
        self.model = runtime.model
        self.max_seqs = max(1, int(max_seqs))
        self.max_cached_tokens = int(max_cached_tokens or self.max_seqs * runtime.context_length)
        self.max_waiting = max(0, int(max_waiting))
        self.waiting: deque[Sequence] = deque()
        self.rows: list[Sequence] = []  # running, in batch-row order
        self.ids: set[Any] = set()
        self.cancelled: set[Any] = set()
        self.reserved = 0
        self.cache: Any = None
        self.mask: torch.Tensor | None = None  # [rows, columns] of the shared cache
        params = runtime.forward_params
        self._keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        # transformers 5.25 renamed past_key_values (deprecated) to cache.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @property
    def busy(self) -> bool:
        return bool(self.rows or self.waiting)

    def submit(self, rid: Any, request: dict[str, Any]) -> int:
        """Tokenize and queue one request (contract REQ); returns its prompt tokens."""
        params = sampling_params(request)
        if request.get("messages") is not None:
            params = self.rt.chat_params(params)
        return self.add(rid, self.rt.prompt_ids(request), params)

    def add(self, rid: Any, prompt: list[int], params: SamplingParams) -> int:
        if rid in self.ids:
            raise InvalidInput(f"generate id {rid!r} is already in use")
        # The wait queue holds what cannot start at the next step (beyond the free slots).
        free = self.max_seqs - len(self.rows)
        if len(self.waiting) >= self.max_waiting + free:
            raise Unavailable(
                f"the model's wait queue is full ({len(self.waiting)} requests waiting)"
            )
        self.waiting.append(Sequence(rid, prompt, params, self.rt))
        self.ids.add(rid)
        return len(prompt)

    def cancel(self, rid: Any) -> bool:
        """Drop a sequence before the next step (its stream ends with finish 'cancelled')."""
        if rid not in self.ids:
            return False
        self.cancelled.add(rid)
        return True

    # -- one step ------------------------------------------------------------------------------

    def step(self) -> list[Event]:
        events: list[Event] = []
        if self.cancelled:
            self._drop_cancelled(events)
        self._admit(events)
        if self.rows:
            try:
                self._decode(events)
            except Exception as exc:  # noqa: BLE001 - fail the batch, keep the worker
                self._fail_all(events, exc)
        self._leave()
        return events

    def _drop_cancelled(self, events: list[Event]) -> None:
        for seq in [s for s in self.waiting if s.rid in self.cancelled]:
            self.waiting.remove(seq)
            self._finish(seq, "cancelled", events)
        for seq in self.rows:
            if seq.rid in self.cancelled and not seq.finish:
                self._finish(seq, "cancelled", events)
        self.cancelled.clear()
        self._leave()

    def _admit(self, events: list[Event]) -> None:
        group: list[Sequence] = []
        reserved = self.reserved
        while self.waiting and len(self.rows) + len(group) < self.max_seqs:
            seq = self.waiting[0]
            if (self.rows or group) and reserved + seq.reserve > self.max_cached_tokens:
                break
            longest = max([len(s.prompt) for s in group] + [len(seq.prompt)])
            if group and longest * (len(group) + 1) > PREFILL_TOKENS:
                break  # the rest next step: running sequences should not wait long
            group.append(self.waiting.popleft())
            reserved += seq.reserve
        if not group:
            return
        try:
            cache, mask = self._prefill(group, events)
        except Exception as exc:  # noqa: BLE001 - these sequences fail, the others go on
            for seq in group:
                if not seq.finish:
                    seq.finish = "error"
                    self.ids.discard(seq.rid)
                    events.append(_error(seq.rid, exc))
            return
        self._join(group, cache, mask)
        self._leave()  # those done at their first token

    @torch.inference_mode()
    def _prefill(self, group: list[Sequence], events: list[Event]) -> tuple[Any, torch.Tensor]:
        """One forward over the prompts that join now; chooses each one's first token."""
        from transformers import DynamicCache

        cache = DynamicCache()
        cache.layer_class_to_replicate = GrowingLayer
        longest = max(len(s.prompt) for s in group)
        mask = torch.ones((len(group), longest), dtype=torch.long)
        args: dict[str, Any] = {}
        if len(group) == 1:  # no padding: exactly the forward generate() makes
            ids = torch.tensor([group[0].prompt])
        else:  # left-padded like the batch, positions counted from each prompt's start
            ids = torch.zeros((len(group), longest), dtype=torch.long)
            for i, s in enumerate(group):
                ids[i, longest - len(s.prompt) :] = torch.tensor(s.prompt)
                mask[i, : longest - len(s.prompt)] = 0
            args = {"attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}
        out = self.model(
            input_ids=ids, use_cache=True, **args, **{self._cache_arg: cache}, **self._keep
        )
        for s in group:
            s.cached = len(s.prompt)
        logits = out.logits[:, -1, :]
        tokens, entries = choose(logits, [s.decoding for s in group], self._token_text)
        for seq, token, entry in zip(group, tokens, entries, strict=True):
            self._advance(seq, token, entry, events)
        return cache, mask

    def _join(self, group: list[Sequence], cache: Any, mask: torch.Tensor) -> None:
        self.reserved += sum(s.reserve for s in group)
        self.rows.extend(group)
        if self.cache is None or self.mask is None:
            self.cache, self.mask = cache, mask
            return
        width, length = self.mask.shape[1], mask.shape[1]
        grow, pad = max(0, length - width), max(0, width - length)
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            adopt(
                mine,
                torch.cat([_pad(mine.keys, grow), _pad(theirs.keys, pad)]),
                torch.cat([_pad(mine.values, grow), _pad(theirs.values, pad)]),
            )
        self.mask = torch.cat([F.pad(self.mask, (grow, 0)), F.pad(mask, (pad, 0))])

    @torch.inference_mode()
    def _decode(self, events: list[Event]) -> None:
        assert self.mask is not None
        rows = self.rows
        mask = torch.cat([self.mask, torch.ones((len(rows), 1), dtype=torch.long)], dim=1)
        out = self.model(
            input_ids=torch.tensor([[s.pending] for s in rows]),
            attention_mask=mask,
            position_ids=torch.tensor([[s.cached] for s in rows]),
            use_cache=True,
            **{self._cache_arg: self.cache},
            **self._keep,
        )
        self.mask = mask
        for s in rows:
            s.cached += 1
        tokens, entries = choose(out.logits[:, -1, :], [s.decoding for s in rows], self._token_text)
        for seq, token, entry in zip(rows, tokens, entries, strict=True):
            self._advance(seq, token, entry, events)

    def _advance(
        self, seq: Sequence, token: int, entry: Logprob | None, events: list[Event]
    ) -> None:
        seq.generated.append(token)
        seq.pending = token
        if token in self.rt.eos_ids:
            self._finish(seq, "stop", events)
            return
        seq.decoding.observe(token)
        text, stopped = seq.stream.push(token)
        events.append(Event(seq.rid, "token", text, [token], None if entry is None else [entry]))
        if stopped:
            self._finish(seq, "stop", events)
        elif len(seq.generated) >= seq.limit:
            self._finish(seq, "length", events)

    def _finish(self, seq: Sequence, reason: str, events: list[Event]) -> None:
        seq.finish = reason
        self.ids.discard(seq.rid)
        events.append(
            Event(
                seq.rid,
                "done",
                text="" if reason == "cancelled" else seq.stream.flush(),
                finish_reason=reason,
                prompt_tokens=len(seq.prompt),
                completion_tokens=len(seq.generated),
            )
        )

    def _leave(self) -> None:
        """Filter finished rows out of the batch and trim columns nobody needs any more."""
        if not any(s.finish for s in self.rows):
            return
        keep = [i for i, s in enumerate(self.rows) if not s.finish]
        for s in self.rows:
            if s.finish:
                self.reserved -= s.reserve
        self.rows = [self.rows[i] for i in keep]
        if not self.rows or self.mask is None:
            self.cache, self.mask = None, None
            return
        index = torch.tensor(keep)
        cut = self.mask.shape[1] - max(s.cached for s in self.rows)
        for layer in self.cache.layers:
            adopt(layer, layer.keys[index, :, cut:], layer.values[index, :, cut:])
        self.mask = self.mask[index, cut:]

    def _fail_all(self, events: list[Event], exc: Exception) -> None:
        for seq in [s for s in self.rows if not s.finish]:
            seq.finish = "error"
            self.ids.discard(seq.rid)
            events.append(_error(seq.rid, exc))

    def _token_text(self, token: int) -> str:
        return self.rt.decode([token])


def _pad(t: torch.Tensor, n: int) -> torch.Tensor:
    """Left-pad the sequence axis of a [batch, heads, seq, dim] tensor with n zero columns."""
    return F.pad(t, (0, 0, n, 0)) if n else t


def _error(rid: Any, exc: Exception) -> Event:
    status = exc.status if isinstance(exc, ModelplaneError) else 503
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return Event(rid, "error", status=status, error=message[:2000])
