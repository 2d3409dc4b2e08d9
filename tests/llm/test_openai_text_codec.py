"""OpenAI completions/chat bodies -> generation requests, and the answer shapes (no server)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from modelplane.api.openai import OpenAIError
from modelplane.api.openai_text_codec import (
    COMPLETION_DEFAULT_MAX_TOKENS,
    delta,
    logprobs_doc,
    parse,
)

USER = [{"role": "user", "content": "x"}]


def body(**fields: Any) -> bytes:
    return orjson.dumps(fields)


def test_choices_per_prompt_with_seed_plus_index() -> None:
    req = parse("completion", body(model="m", prompt=["a", "b"], n=2, seed=10, stop="x"))
    assert [r["prompt"] for r in req.requests] == ["a", "a", "b", "b"]
    assert [r["seed"] for r in req.requests] == [10, 11, 12, 13]
    assert req.prompt_of == [0, 0, 1, 1]
    assert all(r["stop"] == ["x"] for r in req.requests)
    assert req.requests[0]["max_tokens"] == COMPLETION_DEFAULT_MAX_TOKENS  # OpenAI's default
    assert req.id.startswith("cmpl-") and req.created > 0
    unseeded = parse("completion", body(model="m", prompt="a", n=3, max_tokens=None))
    assert [r["seed"] for r in unseeded.requests] == [None] * 3
    assert unseeded.requests[0]["max_tokens"] is None  # explicit null: up to the context


def test_chat_options() -> None:
    req = parse(
        "chat",
        body(
            model="m", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            max_completion_tokens=5, max_tokens=9, logprobs=True, top_logprobs=2, top_k=-1,
            stream=True, stream_options={"include_usage": True}, temperature=0,
        ),
    )  # fmt: skip
    r = req.requests[0]
    assert r["messages"] == [{"role": "user", "content": "hi"}]
    assert r["max_tokens"] == 5 and r["logprobs"] == 2 and r["top_k"] == 0
    assert r["temperature"] == 0.0 and req.stream and req.include_usage
    assert req.id.startswith("chatcmpl-")
    plain = parse("chat", body(model="m", messages=[{"role": "system", "content": "s"}]))
    assert plain.requests[0]["max_tokens"] is None and plain.requests[0]["logprobs"] is None
    unstreamed = body(model="m", messages=USER, stream_options={"include_usage": True})
    assert not parse("chat", unstreamed).include_usage  # a usage chunk only when streaming


@pytest.mark.parametrize(
    ("kind", "fields", "param"),
    [
        ("completion", {"prompt": [1, 2]}, "prompt"),
        ("completion", {"prompt": []}, "prompt"),
        ("completion", {"prompt": "a", "n": 33}, "n"),
        ("completion", {"prompt": "a", "best_of": 3}, "best_of"),
        ("completion", {"prompt": "a", "logprobs": True}, "logprobs"),
        ("completion", {"prompt": "a", "logprobs": 21}, "logprobs"),
        ("completion", {"prompt": "a", "top_p": 0}, "top_p"),
        ("completion", {"prompt": "a", "seed": 1.5}, "seed"),
        ("completion", {"prompt": "a", "stop": ["x"] * 17}, "stop"),
        ("completion", {"prompt": "a", "suffix": "z"}, "suffix"),
        ("completion", {"prompt": "a", "stream": "yes"}, "stream"),
        ("completion", {"prompt": "a", "presence_penalty": 3}, "presence_penalty"),
        ("chat", {"messages": [{"role": "robot", "content": "x"}]}, "messages"),
        ("chat", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages"),
        (
            "chat",
            {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
            "top_logprobs",
        ),
        ("chat", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_fields_are_400_naming_the_field(kind: Any, fields: dict[str, Any], param: str) -> None:
    with pytest.raises(OpenAIError) as exc:
        parse(kind, body(model="m", **fields))
    assert exc.value.status == 400 and exc.value.param == param


def test_logprob_shapes() -> None:
    items = [
        {"token": "ab", "logprob": -0.5, "top": [{"token": "ab", "logprob": -0.5}]},
        {"token": "c", "logprob": -1.0, "top": []},
    ]
    comp = logprobs_doc("completion", items, offset=3)
    assert comp["tokens"] == ["ab", "c"] and comp["token_logprobs"] == [-0.5, -1.0]
    assert comp["top_logprobs"] == [{"ab": -0.5}, {}] and comp["text_offset"] == [3, 5]
    chat = logprobs_doc("chat", items)["content"]
    assert chat[0]["bytes"] == [97, 98] and chat[0]["top_logprobs"][0]["token"] == "ab"
    first = delta("chat", 1, "", None, None, role=True)
    assert first["delta"] == {"role": "assistant", "content": ""} and first["index"] == 1
    assert delta("chat", 0, None, "stop", None)["delta"] == {}
    assert delta("completion", 0, None, "length", None)["text"] == ""
