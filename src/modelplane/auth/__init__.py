"""Security: tenants, API keys (stored as hashes), roles, grants, quotas, rate limits, audit.

``Auth`` bundles the services; the HTTP gate that applies them to every call
lives in ``modelplane.api.gate``. No FastAPI or Starlette types in here.
"""

from modelplane.auth.keys import Principal, parse_expiry
from modelplane.auth.roles import Need, Role, classify
from modelplane.auth.service import Auth

__all__ = ["Auth", "Need", "Principal", "Role", "classify", "parse_expiry"]
