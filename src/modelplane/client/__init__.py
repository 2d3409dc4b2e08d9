"""The Python SDK: ``modelplane.Client`` talks HTTP to a modelplane server."""

from modelplane.client.http import Client, Progress

__all__ = ["Client", "Progress"]
