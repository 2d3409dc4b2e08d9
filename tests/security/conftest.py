"""The auth fixtures (a live server with auth on, and its admin client) for security tests."""

from tests.auth.conftest import realm, start_realm

__all__ = ["realm", "start_realm"]
