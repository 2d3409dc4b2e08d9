"""Tiny causal LMs (built once per run) and their runtimes for the text-generation tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelplane.runtimes import RuntimeOptions, runtime_class
from modelplane.runtimes.generation import GenerationRuntime
from modelplane.serving.scheduler import Engine, Event
from tests.llm.tiny import build, tiny_model


def load(path: Path, **extra: Any) -> GenerationRuntime:
    rt = runtime_class("transformers").load(
        path, RuntimeOptions(task="text-generation", extra=extra)
    )
    assert isinstance(rt, GenerationRuntime)
    return rt


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory, "gpt2")


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory, "llama")


@pytest.fixture(scope="session")
def gpt2(gpt2_dir: Path) -> GenerationRuntime:
    return load(gpt2_dir)


@pytest.fixture(scope="session")
def llama(llama_dir: Path) -> GenerationRuntime:
    return load(llama_dir)


@pytest.fixture(scope="session", params=["gpt2", "llama"])
def trained(request: pytest.FixtureRequest) -> GenerationRuntime:
    rt: GenerationRuntime = request.getfixturevalue(request.param)
    return rt


@pytest.fixture(scope="session")
def untrained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised GPT-2: flat distributions, so sampling and penalties matter."""
    return build("gpt2", tmp_path_factory.mktemp("untrained"), steps=0)


@pytest.fixture(scope="session")
def untrained(untrained_dir: Path) -> GenerationRuntime:
    return load(untrained_dir)


def drain(engine: Engine, max_steps: int = 1000) -> dict[Any, list[Event]]:
    """Step until idle; every sequence's events in order."""
    out: dict[Any, list[Event]] = {}
    for _ in range(max_steps):
        if not engine.busy:
            return out
        for event in engine.step():
            out.setdefault(event.rid, []).append(event)
    raise AssertionError("the engine never went idle")


def text(events: list[Event]) -> str:
    return "".join(e.text for e in events)


def tokens(events: list[Event]) -> list[int]:
    return [t for e in events for t in e.tokens]


def done(events: list[Event]) -> Event:
    assert events and events[-1].kind == "done", events[-1:]
    assert [e.kind for e in events].count("done") == 1
    return events[-1]


@pytest.fixture
def engine(gpt2: GenerationRuntime) -> Iterator[Engine]:
    yield Engine(gpt2, max_seqs=8)
