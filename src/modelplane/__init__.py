"""modelplane: a self-hosted Model-as-a-Service platform."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from modelplane.client import Client

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    # The SDK is imported lazily so that server modules do not pay for it.
    if name == "Client":
        from modelplane.client import Client

        return Client
    raise AttributeError(name)
