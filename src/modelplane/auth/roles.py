"""The role table: which role a call needs, decided from its method and path alone.

Roles are ordered: viewer < user < maintainer < admin; each has what the one
before it has.

- viewer: reads (GET, HEAD, OPTIONS) and ``POST /v2/repository/index`` (a read).
- user: + inference (``POST`` on the inference routes of every protocol).
- maintainer: + writes to models, versions, aliases, grants, deployments,
  datasets and jobs of its own tenant, and repository load/unload.
- admin: everything, including tenants, keys, quotas and the audit log, for
  every tenant (a platform admin).

Mutating calls not named here need admin: a new route is closed until someone
opens it in this table.
"""

from __future__ import annotations

from enum import IntEnum


class Role(IntEnum):
    viewer = 1
    user = 2
    maintainer = 3
    admin = 4


class Need(IntEnum):
    """What a call is; its value is the role it needs (public needs none)."""

    public = 0
    read = Role.viewer
    infer = Role.user
    write = Role.maintainer
    admin = Role.admin


PUBLIC = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Under /api/v1/: the first path segment decides.
ADMIN_SEGMENTS = frozenset({"tenants", "keys", "audit"})
WRITE_SEGMENTS = frozenset({"models", "deployments", "datasets", "jobs"})
OPENAI_INFER = frozenset({"/v1/embeddings", "/v1/completions", "/v1/chat/completions"})
# OpenAI routes: refusals on them take OpenAI's error shape (``GET /v1/models`` is a read).
OPENAI_PATHS = OPENAI_INFER | {"/v1/models"}
TF_VERBS = (":predict", ":classify", ":regress")


def is_inference(path: str) -> bool:
    """A ``POST`` here runs a model (OIP v2, TF Serving, OpenAI)."""
    if path.startswith("/v2/models/"):
        return path.endswith("/infer")
    if path.startswith("/v1/models/"):
        return path.endswith(TF_VERBS)
    return path.rstrip("/") in OPENAI_INFER


def classify(method: str, path: str, metrics_public: bool = False) -> Need:
    """What ``method path`` is, hence the role it needs (plain string checks: hot path)."""
    if path.startswith("/api/v1/"):
        segment = path[8:].partition("/")[0]
        if segment in ADMIN_SEGMENTS:
            return Need.admin
        if method in READ_METHODS:
            return Need.read
        return Need.write if segment in WRITE_SEGMENTS else Need.admin
    if path in PUBLIC or (metrics_public and path == "/metrics"):
        return Need.public
    if method in READ_METHODS:
        return Need.read
    if method == "POST":
        if is_inference(path):
            return Need.infer
        if path == "/v2/repository/index":
            return Need.read
        if path.startswith("/v2/repository/models/"):
            return Need.write
    return Need.admin
