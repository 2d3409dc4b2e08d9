"""``Client.complete`` / ``chat`` / ``stream`` and ``modelplane generate`` against a real server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from modelplane.cli.main import app
from modelplane.client import Client
from modelplane.errors import BadRequest, NotFound
from modelplane.settings import Settings
from tests.conftest import LiveServer
from tests.llm.served import deploy, publish, wait_ready

pytestmark = pytest.mark.slow
LINE = " on the mat and looked at the dog."


@pytest.fixture(scope="module")
def served(gpt2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(Settings(data_dir=tmp_path_factory.mktemp("text-client") / "d")).start()
    try:
        publish(server.url, "tiny", gpt2_dir)
        with httpx.Client(base_url=server.url, timeout=60) as http:
            deploy(http, "tiny", "tiny")
            wait_ready(http, "tiny")
        yield server
    finally:
        server.stop()


def test_sdk_complete_chat_and_stream(served: LiveServer) -> None:
    with Client(served.url) as c:
        done = c.complete("tiny", "the cat sat", max_tokens=40, temperature=0)
        assert done.text == LINE and done.finish_reason == "stop"
        assert done.prompt_tokens > 0 and done.completion_tokens > 0
        assert "".join(c.stream("tiny", "the cat sat", max_tokens=40, temperature=0)) == LINE
        short = c.complete("tiny", "the cat sat", max_tokens=2, temperature=0, n=2)
        assert short.finish_reason == "length" and len(short.choices) == 2
        chat = c.chat("tiny", [{"role": "user", "content": "one two"}], max_tokens=8, seed=1)
        pieces = c.stream(
            "tiny", messages=[{"role": "user", "content": "one two"}], max_tokens=8, seed=1
        )
        assert "".join(pieces) == chat.text and chat.completion_tokens <= 8
        with pytest.raises(NotFound):
            c.complete("nope", "x")
        with pytest.raises(BadRequest, match="128"):
            c.complete("tiny", "one two three " * 100)
        with pytest.raises(BadRequest, match="128"):
            list(c.stream("tiny", "one two three " * 100))


def test_cli_generate(served: LiveServer) -> None:
    runner = CliRunner()
    base = ["--url", served.url]
    r = runner.invoke(app, [*base, "generate", "tiny", "the cat sat", "--temperature", "0"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == LINE.strip()
    r = runner.invoke(
        app, [*base, "generate", "tiny", "the cat sat", "--stream", "--temperature", "0"]
    )
    assert r.exit_code == 0 and r.stdout.strip() == LINE.strip(), r.output
    r = runner.invoke(
        app,
        [*base, "--json", "generate", "tiny", "the cat sat", "--max-tokens", "2", "--temperature",
         "0", "--stop", "mat"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["completion_tokens"] == 2 and doc["finish_reason"] == "length"
    r = runner.invoke(app, [*base, "generate", "tiny", "hi", "--chat", "--max-tokens", "3"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*base, "generate", "nope", "x"])
    assert r.exit_code != 0


def test_cli_shows_and_changes_generation_limits(served: LiveServer) -> None:
    runner = CliRunner()
    base = ["--url", served.url]
    r = runner.invoke(app, [*base, "deployments", "show", "tiny"])
    assert r.exit_code == 0, r.output
    assert "context 128 tokens" in r.stdout and "waiting" in r.stdout
    r = runner.invoke(
        app, [*base, "--json", "deployments", "update", "tiny", "--max-cached-tokens", "4096"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["max_cached_tokens"] == 4096
    with httpx.Client(base_url=served.url, timeout=60) as http:  # the engine reloads with it
        deadline = 120.0
        while True:
            s = wait_ready(http, "tiny")
            if (s["generation"] or {}).get("max_cached_tokens") == 4096:
                break
            deadline -= 0.1
            assert deadline > 0, s
            time.sleep(0.1)
    with Client(served.url) as c:
        assert c.complete("tiny", "the cat sat", max_tokens=40, temperature=0).text == LINE
