"""Model and alias names, references and selectors: what is accepted and what is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelplane.errors import InvalidInput
from modelplane.registry.names import ModelRef, check_alias, check_name, parse_ref, parse_selector

VALID_NAME = r"[a-z0-9][a-z0-9._-]{0,127}"

REFUSED_NAMES = [
    "",
    "Model",
    "MODEL",
    "a/b",
    "/abs",
    "..",
    "a..b",
    "a/../b",
    ".hidden",
    "-dash",
    "_under",
    "%2e%2e",
    "a%2Fb",
    "a%2fb",
    "a b",
    "a\nb",
    "m\n",
    "a\\b",
    "a:b",
    "\uff0e\uff0e",  # fullwidth full stops
    "a\uff0fb",  # fullwidth solidus
    "caf\u00e9",
    "\u0661\u0662",  # Arabic-Indic digits
    "\uff11",  # fullwidth digit one
    "\u0430",  # Cyrillic a, looks like Latin a
    "a" * 129,
]


def non_ascii_text() -> st.SearchStrategy[str]:
    """ASCII-safe text with at least one non-ASCII character somewhere in it."""
    safe = st.from_regex(r"[a-z0-9]{0,8}", fullmatch=True)
    return st.builds(lambda a, c, b: a + c + b, safe, st.characters(min_codepoint=128), safe)


@pytest.mark.parametrize("name", ["m", "7", "bert-base", "resnet_50", "v1.2.3", "a-", "a" * 128])
def test_valid_names_pass_unchanged(name: str) -> None:
    assert check_name(name) == name
    assert parse_ref(name) == ModelRef(name)


@given(st.from_regex(VALID_NAME, fullmatch=True).filter(lambda s: ".." not in s))
def test_every_name_of_the_documented_shape_is_accepted(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", REFUSED_NAMES)
def test_refused_names(name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid name"):
        check_name(name)


@pytest.mark.parametrize("name", REFUSED_NAMES)
def test_refused_names_are_refused_in_refs_and_as_aliases(name: str) -> None:
    with pytest.raises(InvalidInput):
        parse_ref(name)
    with pytest.raises(InvalidInput):
        parse_ref(f"m@{name}")
    with pytest.raises(InvalidInput):
        check_alias(name)


@given(non_ascii_text())
def test_non_ascii_is_always_refused(text: str) -> None:
    for attempt in (
        lambda: check_name(text),
        lambda: check_alias(text),
        lambda: parse_ref(text),
        lambda: parse_ref(f"m@{text}"),
    ):
        with pytest.raises(InvalidInput):
            attempt()


def test_error_names_what_was_checked() -> None:
    with pytest.raises(InvalidInput, match="invalid model name 'Bad'"):
        check_name("Bad", "model name")


@pytest.mark.parametrize("alias", ["prod", "v1", "1a", "champion-2024", "latest-good"])
def test_valid_aliases(alias: str) -> None:
    assert check_alias(alias) == alias


@pytest.mark.parametrize("alias", ["1", "42", "007"])
def test_alias_of_only_digits_is_refused(alias: str) -> None:
    with pytest.raises(InvalidInput, match="only digits"):
        check_alias(alias)


def test_latest_is_reserved() -> None:
    with pytest.raises(InvalidInput, match="reserved"):
        check_alias("latest")


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("m", ModelRef("m")),
        ("m@latest", ModelRef("m")),
        ("m@3", ModelRef("m", version=3)),
        ("m@007", ModelRef("m", version=7)),
        ("m@prod", ModelRef("m", alias="prod")),
        ("m@v2", ModelRef("m", alias="v2")),
        ("my-model.v2@staging", ModelRef("my-model.v2", alias="staging")),
    ],
)
def test_parse_ref(ref: str, expected: ModelRef) -> None:
    assert parse_ref(ref) == expected


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("m@", "nothing after '@'"),
        ("m@0", "versions start at 1"),
        ("m@00", "versions start at 1"),
        ("m@-1", "invalid alias"),
        ("m@Prod", "invalid alias"),
        ("m@1@2", "invalid alias"),
        ("m@\uff13", "invalid alias"),  # fullwidth digit three
        ("@3", "invalid model name"),
        ("M@3", "invalid model name"),
    ],
)
def test_parse_ref_refuses(ref: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_ref(ref)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (None, ModelRef("m")),
        ("latest", ModelRef("m")),
        ("12", ModelRef("m", version=12)),
        ("prod", ModelRef("m", alias="prod")),
    ],
)
def test_parse_selector(selector: str | None, expected: ModelRef) -> None:
    assert parse_selector("m", selector) == expected


@pytest.mark.parametrize(
    ("model", "selector"), [("m", "0"), ("m", "../x"), ("m", "%2e%2e"), ("m", ""), ("M", "1")]
)
def test_parse_selector_refuses(model: str, selector: str) -> None:
    with pytest.raises(InvalidInput):
        parse_selector(model, selector)


@pytest.mark.parametrize("ref", ["m", "m@3", "m@prod"])
def test_refs_print_as_they_parse(ref: str) -> None:
    assert str(parse_ref(ref)) == ref
