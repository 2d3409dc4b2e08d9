"""Text generation served over HTTP, called with the unchanged ``openai`` SDK.

One server for the module with three deployments: ``tiny`` (the trained tiny
GPT-2: greedy decoding completes a corpus line), ``long`` (a random GPT-2 that
never stops by itself: it holds slots for as long as a test needs) and ``one``
(the same, one sequence slot and a wait queue of one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from transformers import AutoTokenizer

from modelplane.settings import Settings
from tests.conftest import LiveServer
from tests.llm.served import deploy, long_model, publish, status, wait_ready, wait_status

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(gpt2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("openai-text")
    server = LiveServer(Settings(data_dir=root / "data", alias_poll_seconds=0.2)).start()
    try:
        publish(server.url, "tiny", gpt2_dir)
        publish(server.url, "long", long_model(gpt2_dir, root / "long", positions=8192))
        with httpx.Client(base_url=server.url, timeout=60) as http:
            deploy(http, "tiny", "tiny")
            deploy(http, "long", "long")
            deploy(http, "one", "long", max_batch_size=1, max_queue=1)
            for name in ("tiny", "long", "one"):
                wait_ready(http, name)
        yield server
    finally:
        server.stop()


@pytest.fixture
def oa(served: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture
def http(served: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=60) as c:
        yield c


def greedy(oa: openai.OpenAI, prompt: str, **kw: object) -> openai.types.Completion:
    return oa.completions.create(model="tiny", prompt=prompt, temperature=0, **kw)  # type: ignore[call-overload,no-any-return]


def test_completion_completes_a_corpus_line_with_usage(oa: openai.OpenAI, gpt2_dir: Path) -> None:
    r = greedy(oa, "the cat sat", max_tokens=40)
    assert r.object == "text_completion" and r.model == "tiny" and r.id.startswith("cmpl-")
    assert r.choices[0].text == " on the mat and looked at the dog."
    assert r.choices[0].finish_reason == "stop"
    tok = AutoTokenizer.from_pretrained(gpt2_dir)
    assert r.usage is not None
    assert r.usage.prompt_tokens == len(tok("the cat sat")["input_ids"])
    assert r.usage.completion_tokens >= len(tok(r.choices[0].text)["input_ids"]) - 1
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_max_tokens_is_honoured_exactly(oa: openai.OpenAI) -> None:
    full = greedy(oa, "one two", max_tokens=40).choices[0].text
    r = greedy(oa, "one two", max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 3
    assert full.startswith(r.choices[0].text) and len(r.choices[0].text) < len(full)
    chat = oa.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=2
    )
    assert chat.usage is not None and chat.usage.completion_tokens == 2
    assert chat.choices[0].finish_reason == "length"


def test_stop_sequences_cut_the_text_exactly(oa: openai.OpenAI) -> None:
    full = greedy(oa, "one two", max_tokens=40).choices[0].text
    assert " six" in full and " four" in full
    r = greedy(oa, "one two", max_tokens=40, stop=" six")
    assert r.choices[0].text == full.split(" six")[0]
    assert r.choices[0].finish_reason == "stop"
    r = greedy(oa, "one two", max_tokens=40, stop=["seven", "ve"])  # the earliest match wins
    assert r.choices[0].text == full[: full.index("ve")]
    streamed = "".join(
        c.choices[0].text
        for c in greedy(oa, "one two", max_tokens=40, stop=[" six"], stream=True)
        if c.choices
    )
    assert streamed == full.split(" six")[0]


def test_stream_equals_answer_and_ends_with_done(oa: openai.OpenAI, http: httpx.Client) -> None:
    whole = greedy(oa, "alpha beta", max_tokens=30)
    chunks = list(
        greedy(oa, "alpha beta", max_tokens=30, stream=True, stream_options={"include_usage": True})
    )
    assert len(chunks) > 2
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(c.id == chunks[0].id and c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    body = {"model": "tiny", "prompt": "alpha beta", "max_tokens": 5, "stream": True}
    with http.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert orjson.loads(events[-2][6:])["choices"][0]["finish_reason"] == "length"


def test_chat_streaming_and_not(oa: openai.OpenAI) -> None:
    messages: list[dict[str, str]] = [{"role": "user", "content": "the dog"}]
    whole = oa.chat.completions.create(
        model="tiny",
        messages=messages,
        temperature=0,
        max_tokens=20,  # type: ignore[arg-type]
    )
    assert whole.object == "chat.completion" and whole.id.startswith("chatcmpl-")
    assert whole.choices[0].message.role == "assistant"
    assert whole.choices[0].message.content
    chunks = list(
        oa.chat.completions.create(
            model="tiny",
            messages=messages,
            temperature=0,
            max_tokens=20,
            stream=True,  # type: ignore[arg-type]
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_same_seed_same_text_and_n_choices_use_seed_plus_i(oa: openai.OpenAI) -> None:
    def sample(seed: int, n: int = 1) -> list[str]:
        r = oa.completions.create(
            model="tiny", prompt="the", max_tokens=12, temperature=1.5, seed=seed, n=n
        )
        assert [c.index for c in r.choices] == list(range(n))
        return [c.text for c in r.choices]

    assert sample(7) == sample(7)
    three = sample(7, n=3)
    assert three == [sample(7)[0], sample(8)[0], sample(9)[0]]
    assert len({t for s in range(5) for t in sample(100 + s)}) > 1  # the seed matters
    chat = oa.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "x"}], n=2, max_tokens=4, seed=1
    )
    assert [c.index for c in chat.choices] == [0, 1]
    assert chat.usage is not None and chat.usage.completion_tokens <= 8


def test_n_streams_several_choices(oa: openai.OpenAI) -> None:
    stream = oa.completions.create(
        model="tiny", prompt="red", max_tokens=6, temperature=1.0, seed=3, n=3, stream=True
    )
    texts = ["", "", ""]
    reasons: list[str | None] = [None, None, None]
    for c in stream:
        for ch in c.choices:
            texts[ch.index] += ch.text
            reasons[ch.index] = ch.finish_reason or reasons[ch.index]
    whole = oa.completions.create(
        model="tiny", prompt="red", max_tokens=6, temperature=1.0, seed=3, n=3
    )
    assert texts == [c.text for c in whole.choices]
    assert all(r is not None for r in reasons)


def test_logprobs(oa: openai.OpenAI) -> None:
    r = greedy(oa, "monday", max_tokens=5, logprobs=2)
    lp = r.choices[0].logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs
    assert r.usage is not None and len(lp.tokens) == r.usage.completion_tokens
    assert "".join(lp.tokens) == r.choices[0].text
    assert all(x is not None and x <= 0 for x in lp.token_logprobs)
    assert all(len(top) <= 2 for top in lp.top_logprobs)
    chat = oa.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "monday"}],
        max_tokens=4,
        logprobs=True,
        top_logprobs=3,
    )
    content = chat.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and len(content) <= chat.usage.completion_tokens  # type: ignore[union-attr]
    assert "".join(t.token for t in content) == chat.choices[0].message.content
    assert all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in content)
    assert greedy(oa, "monday", max_tokens=3).choices[0].logprobs is None


def test_eight_streams_interleave(served: LiveServer) -> None:
    """A late request gets its first token (and its end) before an early long one ends."""
    events: list[tuple[str, str]] = []
    long_started = asyncio.Event()

    async def run(client: openai.AsyncOpenAI, name: str, max_tokens: int) -> None:
        stream = await client.completions.create(
            model="long", prompt="the cat", max_tokens=max_tokens, temperature=0, stream=True
        )
        first = True
        async for chunk in stream:
            if first and chunk.choices and chunk.choices[0].text:
                events.append((name, "first"))
                long_started.set()
                first = False
        events.append((name, "end"))

    async def main() -> None:
        async with openai.AsyncOpenAI(
            base_url=f"{served.url}/v1", api_key="unused", max_retries=0
        ) as client:
            long = asyncio.create_task(run(client, "long", 2000))
            await long_started.wait()
            await asyncio.gather(*(run(client, f"late{i}", 5) for i in range(7)))
            await long

    asyncio.run(main())
    long_end = events.index(("long", "end"))
    for i in range(7):
        assert events.index((f"late{i}", "first")) < long_end, events
        assert events.index((f"late{i}", "end")) < long_end, events


def test_disconnect_frees_the_slot(served: LiveServer, http: httpx.Client) -> None:
    """Deployment ``one`` has one slot: after a client leaves mid-stream, the next gets it."""
    body = {"model": "one", "prompt": "the cat", "max_tokens": 8000, "temperature": 0}
    with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(line for line in lines if line).startswith("data: ")
        assert status(http, "one")["active_sequences"] == 1
    wait_status(http, "one", "active_sequences", 0, timeout=20)
    # 8000 tokens would take far longer than this call may wait
    with openai.OpenAI(
        base_url=f"{served.url}/v1", api_key="unused", max_retries=0, timeout=20
    ) as oa:
        r2 = oa.completions.create(model="one", prompt="the cat", max_tokens=5, temperature=0)
    assert r2.choices[0].finish_reason == "length"


def test_more_choices_than_slots_run_in_turn(served: LiveServer) -> None:
    """``one`` has one slot and a queue of one: n=2 takes the slot twice, in turn."""
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0) as oa:
        r = oa.completions.create(model="one", prompt="x", max_tokens=3, temperature=0, n=2)
        assert [c.finish_reason for c in r.choices] == ["length", "length"]
        assert r.choices[0].text == r.choices[1].text  # greedy: the same text twice
        chunks = list(
            oa.completions.create(
                model="one", prompt="x", max_tokens=3, temperature=0, n=2, stream=True
            )
        )
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}


def test_queue_full_is_503_and_the_waiter_runs_later(
    served: LiveServer, http: httpx.Client
) -> None:
    oa = openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)

    async def main() -> tuple[openai.APIStatusError, str | None]:
        holder = await oa.completions.create(
            model="one", prompt="the", max_tokens=8000, temperature=0, stream=True
        )
        it = holder.__aiter__()
        await it.__anext__()
        waiter = asyncio.create_task(
            oa.completions.create(model="one", prompt="the", max_tokens=3, temperature=0)
        )
        await asyncio.to_thread(wait_status, http, "one", "queued_sequences", 1)
        with pytest.raises(openai.APIStatusError) as refused:
            await oa.completions.create(model="one", prompt="the", max_tokens=3)
        await holder.close()  # the holder leaves: the waiter gets the slot
        answer = await waiter
        await oa.close()
        return refused.value, answer.choices[0].finish_reason

    refused, reason = asyncio.run(main())
    assert refused.status_code == 503
    assert refused.response.headers.get("retry-after")
    err = refused.response.json()["error"]
    assert "queue is full" in err["message"] and err["type"] == "server_error"
    assert reason == "length"


def test_context_overflow_is_400_naming_the_limit(oa: openai.OpenAI) -> None:
    prompt = "one two three four five six seven eight nine ten. " * 40
    with pytest.raises(openai.BadRequestError) as exc:
        oa.completions.create(model="tiny", prompt=prompt, max_tokens=5, stream=True)
    assert "128" in str(exc.value)
    err = exc.value.response.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == "prompt"
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}])


def test_bad_requests_are_openai_errors(oa: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        oa.completions.create(model="nope", prompt="x")
    assert nf.value.response.json()["error"]["code"] == "model_not_found"
    cases = [
        ({"model": "tiny", "prompt": [1, 2, 3]}, "prompt"),
        ({"model": "tiny", "prompt": "x", "temperature": 5}, "temperature"),
        ({"model": "tiny", "prompt": "x", "n": 0}, "n"),
        ({"model": "tiny", "prompt": "x", "stop": [""]}, "stop"),
        ({"model": "tiny", "prompt": "x", "max_tokens": -1}, "max_tokens"),
        ({"model": "tiny", "prompt": "x", "echo": True}, "echo"),
        ({"prompt": "x"}, "model"),
    ]
    for body, param in cases:
        r = http.post("/v1/completions", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == param, r.text
    r = http.post("/v1/chat/completions", json={"model": "tiny", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    r = http.post("/v1/completions", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_models_lists_text_deployments(oa: openai.OpenAI, http: httpx.Client) -> None:
    ids = [m.id for m in oa.models.list()]
    assert ids == sorted(ids) and {"long", "one", "tiny"} <= set(ids)
    before = status(http, "tiny")["sequences_total"]
    greedy(oa, "x", max_tokens=2, n=2)
    s = status(http, "tiny")
    assert s["sequences_total"] == before + 2 and s["active_sequences"] == 0
    assert s["generation"]["context_length"] == 128 and s["generation"]["max_seqs"] == 8


def test_worker_death_ends_the_stream_with_an_error(served: LiveServer, http: httpx.Client) -> None:
    import os
    import signal

    pid = status(http, "long")["workers"][0]["pid"]
    body = {"model": "long", "prompt": "x", "max_tokens": 8000, "temperature": 0, "stream": True}
    with http.stream("POST", "/v1/completions", json=body) as r:
        lines = (line for line in r.iter_lines() if line)
        assert next(lines).startswith("data: {")
        os.kill(pid, signal.SIGKILL)
        rest = list(lines)
    last = orjson.loads(rest[-1][6:])
    assert "error" in last and "worker" in last["error"]["message"]
    assert "data: [DONE]" not in rest
    wait_ready(http, "long")
    assert status(http, "long")["restarts"] >= 1


def test_streams_in_flight_finish_on_the_old_version_during_a_swap(
    served: LiveServer, http: httpx.Client, gpt2_dir: Path, tmp_path: Path
) -> None:
    from modelplane.client import Client

    r = http.put("/api/v1/models/long/aliases/prod", json={"version": 1})
    assert r.status_code == 200, r.text
    deploy(http, "swap", "long@prod")
    old_pid = wait_ready(http, "swap", version=1)["workers"][0]["pid"]
    body = {"model": "swap", "prompt": "x", "max_tokens": 6000, "temperature": 0}
    with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as stream:
        lines = (line for line in stream.iter_lines() if line)
        assert next(lines).startswith("data: {")
        with Client(served.url) as c:
            c.upload_version("long", long_model(gpt2_dir, tmp_path / "v2", 8192), "transformers")
        r = http.put("/api/v1/models/long/aliases/prod", json={"version": 2})
        assert r.status_code == 200, r.text
        rest = list(lines)
    assert rest[-1] == "data: [DONE]"
    last = orjson.loads(rest[-2][6:])
    assert last["choices"][0]["finish_reason"] == "length"
    new = wait_ready(http, "swap", version=2)
    assert new["workers"][0]["pid"] != old_pid
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0) as oa:
        answer = oa.completions.create(model="swap", prompt="x", max_tokens=3, temperature=0)
    assert answer.choices[0].finish_reason == "length"


def _metric(http: httpx.Client, name: str, deployment: str) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(name + "{") and f'deployment="{deployment}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_token_metrics_and_sequences_gauge(oa: openai.OpenAI, http: httpx.Client) -> None:
    made = _metric(http, "modelplane_generated_tokens_total", "tiny")
    read = _metric(http, "modelplane_prompt_tokens_total", "tiny")
    ttft = _metric(http, "modelplane_time_to_first_token_seconds_count", "tiny")
    r = greedy(oa, "red green", max_tokens=6)
    list(greedy(oa, "red green", max_tokens=6, stream=True))
    assert r.usage is not None
    assert _metric(http, "modelplane_generated_tokens_total", "tiny") == made + 2 * 6
    assert (
        _metric(http, "modelplane_prompt_tokens_total", "tiny") == read + 2 * r.usage.prompt_tokens
    )
    assert _metric(http, "modelplane_time_to_first_token_seconds_count", "tiny") == ttft + 2
    assert (
        'modelplane_active_sequences{deployment="tiny",tenant="default"} 0.0'
        in http.get("/metrics").text
    )
