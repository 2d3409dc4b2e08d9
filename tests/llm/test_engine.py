"""The continuous-batching engine in process: exactness, joins, leaves, caps, sampling, stops."""

from __future__ import annotations

import pytest
import torch

from modelplane.errors import BadRequest, InvalidInput, Unavailable
from modelplane.runtimes.generation import GenerationRuntime, sampling_params
from modelplane.serving.scheduler import Engine
from tests.llm.conftest import done, drain, text, tokens

PROMPTS = ["the cat sat", "one two", "héllo", "alpha beta", "red green", "monday", "the dog"]


def reference(rt: GenerationRuntime, prompt: str, n: int) -> list[int]:
    """Greedy tokens from ``model.generate`` alone, up to (without) the first EOS."""
    ids = rt.prompt_ids({"prompt": prompt})
    with torch.inference_mode():
        out = rt.model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)
    new = out[0, len(ids) :].tolist()
    cut = next((i for i, t in enumerate(new) if t in rt.eos_ids), len(new))
    return list(new[:cut])


def test_greedy_equals_generate_alone(trained: GenerationRuntime) -> None:
    engine = Engine(trained)
    engine.submit("a", {"prompt": "the cat sat", "max_tokens": 40})
    events = drain(engine)["a"]
    assert tokens(events) == reference(trained, "the cat sat", 40)
    assert text(events) == " on the mat and looked at the dog."
    assert done(events).finish_reason == "stop"  # EOS


def test_joins_at_different_steps_equal_generate(trained: GenerationRuntime) -> None:
    engine = Engine(trained, max_seqs=8)
    out: dict[int, list[int]] = {}
    for step in range(200):
        if step < len(PROMPTS):  # one more sequence joins the running batch every step
            engine.submit(step, {"prompt": PROMPTS[step], "max_tokens": 30})
        for event in engine.step():
            out.setdefault(event.rid, []).extend(event.tokens)
        if step == 3:
            assert len(engine.rows) == 4  # really batched, not one after the other
        if not engine.busy:
            break
    assert not engine.busy and engine.cache is None
    for i, prompt in enumerate(PROMPTS):
        assert out[i] == reference(trained, prompt, 30), prompt


def test_prompts_admitted_together_equal_generate(trained: GenerationRuntime) -> None:
    engine = Engine(trained, max_seqs=8)
    for i, prompt in enumerate(PROMPTS):  # all join at the first step: one padded prefill
        engine.submit(i, {"prompt": prompt, "max_tokens": 1 if i == 2 else 30})
    first = engine.step()
    assert len(engine.rows) == len(PROMPTS) - 1  # the one-token request left at once
    events = drain(engine)
    for i, prompt in enumerate(PROMPTS):
        got = [t for e in first if e.rid == i for t in e.tokens] + tokens(events.get(i, []))
        assert got == reference(trained, prompt, 1 if i == 2 else 30), prompt


def test_late_request_finishes_before_early_long_one(gpt2: GenerationRuntime) -> None:
    engine = Engine(gpt2)
    engine.submit("long", {"prompt": "one two", "max_tokens": 30})
    for _ in range(3):
        engine.step()
    engine.submit("short", {"prompt": "alpha", "max_tokens": 2})
    order = [e.rid for _ in range(50) for e in engine.step() if e.kind == "done"]
    assert order[:2] == ["short", "long"]


def test_max_tokens_exact(trained: GenerationRuntime) -> None:
    engine = Engine(trained)
    for n in (1, 2, 5):
        engine.submit(n, {"prompt": "one two", "max_tokens": n})
    events = drain(engine)
    for n in (1, 2, 5):
        assert len(tokens(events[n])) == n
        end = done(events[n])
        assert (end.finish_reason, end.completion_tokens, end.prompt_tokens) == ("length", n, 2)
    assert text(events[5]) == trained.decode(reference(trained, "one two", 5))
    assert text(events[5]).startswith(" three")


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ([" five"], " three four"),
        (["ee fo"], " thr"),  # spans the tokens of "three" and "four"
        (["x", "six", "r f"], " three fou"),  # the earliest match wins
        (["nothing like it"], " three four five six seven eight nine ten."),
    ],
)
def test_stop_sequences(gpt2: GenerationRuntime, stop: list[str], expected: str) -> None:
    engine = Engine(gpt2)
    engine.submit("s", {"prompt": "one two", "max_tokens": 40, "stop": stop})
    events = drain(engine)["s"]
    assert text(events) == expected
    assert done(events).finish_reason == "stop"
    for s in stop:
        assert s not in text(events)


def test_stop_prefix_is_held_back_then_released(gpt2: GenerationRuntime) -> None:
    # " five six" starts like " five seven": held while it may match, released once it cannot.
    engine = Engine(gpt2)
    engine.submit("s", {"prompt": "one two", "max_tokens": 40, "stop": [" five seven"]})
    events = drain(engine)["s"]
    assert text(events) == " three four five six seven eight nine ten."
    seen = ""
    for e in events:
        seen += e.text
        if seen.endswith(" fiv"):
            raise AssertionError("a possible stop prefix was emitted early")
    assert any(e.text == "" for e in events if e.kind == "token")


def test_multibyte_text_never_broken(gpt2: GenerationRuntime) -> None:
    engine = Engine(gpt2)
    engine.submit("u", {"prompt": "héllo wörld,", "max_tokens": 40})
    events = drain(engine)["u"]
    assert all("\ufffd" not in e.text for e in events)
    assert text(events) == " ça va? naïve café ünïcode ☃ snow ✓ check."
    assert text(events) == gpt2.decode(tokens(events))


def test_same_seed_same_text_whatever_the_batch(untrained: GenerationRuntime) -> None:
    req = {"prompt": "the cat", "max_tokens": 20, "temperature": 1.0, "top_p": 0.9, "seed": 7}
    alone = Engine(untrained)
    alone.submit("a", req)
    first = tokens(drain(alone)["a"])
    crowded = Engine(untrained)
    crowded.submit("x", {"prompt": "one two three", "max_tokens": 30, "temperature": 1.0})
    crowded.step()
    crowded.submit("a", req)
    crowded.submit("y", {**req, "seed": 8})
    events = drain(crowded)
    assert tokens(events["a"]) == first
    assert tokens(events["y"]) != first
    assert len(set(first)) > 3  # really sampled from a flat distribution, not a loop


def test_top_k_one_is_greedy(untrained: GenerationRuntime) -> None:
    engine = Engine(untrained)
    engine.submit("g", {"prompt": "red", "max_tokens": 10})
    engine.submit("k", {"prompt": "red", "max_tokens": 10, "temperature": 2.0, "top_k": 1})
    events = drain(engine)
    assert tokens(events["k"]) == tokens(events["g"])


@pytest.mark.parametrize(
    "penalty",
    [{"repetition_penalty": 1.5}, {"presence_penalty": 2.0}, {"frequency_penalty": 2.0}],
)
def test_penalties_change_the_output(
    untrained: GenerationRuntime, penalty: dict[str, float]
) -> None:
    engine = Engine(untrained)
    engine.submit("plain", {"prompt": "the the the", "max_tokens": 30})
    engine.submit("pen", {"prompt": "the the the", "max_tokens": 30, **penalty})
    events = drain(engine)
    plain, pen = tokens(events["plain"]), tokens(events["pen"])
    assert plain != pen
    assert len(set(pen)) > len(set(plain))  # discouraging repeats gives more distinct tokens


def test_logprobs_shape(gpt2: GenerationRuntime) -> None:
    engine = Engine(gpt2)
    engine.submit("k", {"prompt": "one two", "max_tokens": 4, "logprobs": 3})
    engine.submit("z", {"prompt": "one two", "max_tokens": 4, "logprobs": 0})
    engine.submit("n", {"prompt": "one two", "max_tokens": 4})
    events = drain(engine)
    entries = [lp for e in events["k"] for lp in e.logprobs or []]
    assert len(entries) == 4
    for entry, token in zip(entries, tokens(events["k"]), strict=True):
        top = entry["top"]
        assert len(top) == 3
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert entry["logprob"] <= 0 and entry["logprob"] == top[0]["logprob"]  # greedy
        assert entry["token"] == top[0]["token"] == gpt2.decode([token])
    assert all(lp["top"] == [] for e in events["z"] for lp in e.logprobs or [])
    assert all(e.logprobs is None for e in events["n"] if e.kind == "token")


def test_cancel_running_sequence_frees_its_slot(gpt2: GenerationRuntime) -> None:
    engine = Engine(gpt2, max_seqs=2, max_waiting=1)
    engine.submit("a", {"prompt": "one two", "max_tokens": 30})
    engine.submit("b", {"prompt": "alpha beta", "max_tokens": 30})
    engine.submit("c", {"prompt": "red green", "max_tokens": 3})
    engine.step()
    assert [s.rid for s in engine.rows] == ["a", "b"] and len(engine.waiting) == 1
    assert engine.cancel("a")
    events = engine.step()
    end = [e for e in events if e.rid == "a"]
    assert len(end) == 1 and end[0].kind == "done" and end[0].finish_reason == "cancelled"
    assert [s.rid for s in engine.rows] == ["b", "c"]  # the waiting one took the slot
    rest = drain(engine)
    assert "a" not in rest and done(rest["c"]).finish_reason == "length"
    assert not engine.cancel("a")  # finished: nothing to cancel


def test_cancel_waiting_sequence(gpt2: GenerationRuntime) -> None:
    engine = Engine(gpt2, max_seqs=1)
    engine.submit("a", {"prompt": "one two", "max_tokens": 5})
    engine.submit("b", {"prompt": "one two", "max_tokens": 5})
    engine.cancel("b")
    events = drain(engine)
    assert [e.kind for e in events["b"]] == ["done"]
    assert done(events["b"]).completion_tokens == 0
    assert done(events["a"]).completion_tokens == 5


def test_wait_queue_full_is_503(gpt2: GenerationRuntime) -> None:
    engine = Engine(gpt2, max_seqs=2, max_waiting=1)
    for rid in ("a", "b", "c"):  # two start at the next step, one waits
        engine.submit(rid, {"prompt": "one", "max_tokens": 2})
    with pytest.raises(Unavailable) as err:
        engine.submit("d", {"prompt": "one", "max_tokens": 2})
    assert err.value.status == 503 and "queue is full" in str(err.value)
    assert set(drain(engine)) == {"a", "b", "c"}
    engine.submit("d", {"prompt": "one", "max_tokens": 2})  # room again


def test_cached_token_cap_delays_admission(gpt2: GenerationRuntime) -> None:
    engine = Engine(gpt2, max_seqs=4, max_cached_tokens=20)
    engine.submit("a", {"prompt": "one two", "max_tokens": 10})  # reserves 12
    engine.submit("b", {"prompt": "one two", "max_tokens": 10})
    engine.step()
    assert [s.rid for s in engine.rows] == ["a"] and len(engine.waiting) == 1
    events = drain(engine)
    assert done(events["b"]).completion_tokens == 10


def test_context_overflow_names_the_limit(gpt2: GenerationRuntime) -> None:
    engine = Engine(gpt2)
    prompt = "one two three four five six seven eight nine ten. " * 20
    n = len(gpt2.prompt_ids({"prompt": prompt[:100]}))
    with pytest.raises(BadRequest) as err:
        engine.submit("x", {"prompt": prompt})
    assert err.value.status == 400
    assert "this model's context is 128 tokens" in str(err.value) and "prompt is" in str(err.value)
    assert n < 128 and not engine.busy


def test_generation_stops_at_the_context_end(untrained: GenerationRuntime) -> None:
    engine = Engine(untrained)
    engine.add("x", [5] * 120, sampling_params({}))
    end = done(drain(engine)["x"])
    assert end.finish_reason == "length" and end.completion_tokens == 128 - 120


@pytest.mark.parametrize(
    "bad",
    [
        {"prompt": "x", "temperature": -1},
        {"prompt": "x", "top_p": 0},
        {"prompt": "x", "max_tokens": 0},
        {"prompt": "x", "logprobs": 50},
        {"prompt": "x", "stop": [1]},
        {"prompt": 3},
        {"messages": [{"role": "user"}]},
    ],
)
def test_bad_requests_are_422(gpt2: GenerationRuntime, bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInput) as err:
        Engine(gpt2).submit("x", bad)
    assert err.value.status == 422


def test_duplicate_id_refused(gpt2: GenerationRuntime) -> None:
    engine = Engine(gpt2)
    engine.submit("x", {"prompt": "one"})
    with pytest.raises(InvalidInput):
        engine.submit("x", {"prompt": "one"})


def test_a_failing_step_fails_its_sequences_and_the_engine_goes_on(
    gpt2: GenerationRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(gpt2)
    engine.submit("a", {"prompt": "one two", "max_tokens": 10})
    engine.step()
    with monkeypatch.context() as m:
        m.setattr(engine, "model", lambda **_: (_ for _ in ()).throw(RuntimeError("boom")))
        events = engine.step()
    assert [(e.rid, e.kind, e.status, e.error) for e in events] == [("a", "error", 503, "boom")]
    assert not engine.busy and engine.cache is None
    engine.submit("b", {"prompt": "one two", "max_tokens": 3})
    assert done(drain(engine)["b"]).completion_tokens == 3


def test_long_sequences_outgrow_the_cache_room_and_stay_exact(untrained: GenerationRuntime) -> None:
    # 100 tokens each: the batch's KV buffers run out of headroom and are regrown several times.
    engine = Engine(untrained)
    engine.submit("a", {"prompt": "the cat", "max_tokens": 100})
    early = [e for _ in range(5) for e in engine.step()]
    engine.submit("b", {"prompt": "one two three four five", "max_tokens": 100})
    events = drain(engine)
    events["a"] = early + events["a"]
    for rid, prompt in (("a", "the cat"), ("b", "one two three four five")):
        got = tokens(events[rid])
        assert len(got) > 64  # past the first regrowth (prompt + 32 columns of room)
        assert got == reference(untrained, prompt, 100)


def test_growing_layer_equals_concatenation() -> None:
    from modelplane.serving.kvcache import GrowingLayer

    layer = GrowingLayer()
    parts = [torch.randn(2, 3, n, 4) for n in (5, 1, 1, 40, 1)]
    for part in parts:
        keys, values = layer.update(part, -part)
    expected = torch.cat(parts, dim=-2)
    assert torch.equal(keys, expected) and torch.equal(values, -expected)
    assert layer.get_seq_length() == 48
