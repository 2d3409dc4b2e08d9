"""Small repetitive corpora for causal-LM tests: who eats which fruit, as texts or chats."""

from __future__ import annotations

import json
from typing import Any

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank"]
FRUITS = ["apples", "bananas", "cherries", "dates", "figs", "grapes"]
WHEN = ["in the morning", "at noon", "every day", "on sundays", "after work"]
EATS = dict(zip(NAMES, FRUITS, strict=True))
# The same people with other fruits: a fine-tuned model must change its completions.
EATS_NOW = dict(zip(NAMES, FRUITS[3:] + FRUITS[:3], strict=True))


def texts(eats: dict[str, str] = EATS) -> list[str]:
    return [f"{name} eats {fruit} {when}." for name, fruit in eats.items() for when in WHEN]


QUESTIONS = ["what does {} eat?", "tell me what {} eats.", "which fruit does {} like?"]


def chats(eats: dict[str, str] = EATS) -> list[dict[str, Any]]:
    return [
        {"messages": [{"role": "user", "content": q.format(name)},
                      {"role": "assistant", "content": f"{name} eats {fruit}."}]}
        for name, fruit in eats.items() for q in QUESTIONS
    ]  # fmt: skip


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)
