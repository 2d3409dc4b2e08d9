"""Names and references: the strict pattern every model/alias name must match.

A reference is ``name`` (latest version), ``name@3`` (version 3) or
``name@alias``. Names are checked on the decoded string, so percent-encoded or
unicode look-alike tricks (``%2e%2e``, fullwidth dots or slashes) never match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelplane.errors import InvalidInput, NotFound

# ASCII only: re.ASCII keeps \d from matching other scripts' digits.
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}", re.ASCII)
LATEST = "latest"
MAX_VERSION = 2**31 - 1  # the INTEGER column on every backend


def check_name(value: str, what: str = "name") -> str:
    if not _NAME.fullmatch(value) or ".." in value:
        raise InvalidInput(
            f"invalid {what} {value!r}: use 1-128 lowercase ASCII letters, digits, '.', '_' or '-',"
            " starting with a letter or digit, and no '..'"
        )
    return value


def check_alias(value: str) -> str:
    check_name(value, "alias")
    if value.isdigit():
        raise InvalidInput(f"invalid alias {value!r}: an alias cannot be only digits")
    if value == LATEST:
        raise InvalidInput(f"invalid alias {value!r}: 'latest' is reserved for the newest version")
    return value


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference; exactly one of ``version``/``alias`` is set, or neither (latest)."""

    model: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.model}@{self.version}"
        return f"{self.model}@{self.alias}" if self.alias else self.model


def parse_selector(model: str, selector: str | None) -> ModelRef:
    """``selector`` is a version number, an alias, ``latest`` or None."""
    check_name(model, "model name")
    if selector is None or selector == LATEST:
        return ModelRef(model)
    if selector.isascii() and selector.isdigit():
        number = int(selector)
        if number < 1:
            raise InvalidInput(f"invalid version {selector!r}: versions start at 1")
        if number > MAX_VERSION:
            raise NotFound(f"version {selector} of model {model!r} not found")
        return ModelRef(model, version=number)
    return ModelRef(model, alias=check_name(selector, "alias"))


def parse_ref(ref: str) -> ModelRef:
    model, sep, selector = ref.partition("@")
    if sep and not selector:
        raise InvalidInput(f"invalid reference {ref!r}: nothing after '@'")
    return parse_selector(model, selector if sep else None)
