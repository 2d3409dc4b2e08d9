"""Imports every table module so ``metadata`` is complete (used by Alembic)."""

from modelplane.auth import tables as _auth_tables  # noqa: F401
from modelplane.datasets import tables as _datasets_tables  # noqa: F401
from modelplane.db.base import Base
from modelplane.jobs import tables as _jobs_tables  # noqa: F401
from modelplane.monitoring import tables as _usage_tables  # noqa: F401
from modelplane.monitoring.alerts import tables as _alerts_tables  # noqa: F401
from modelplane.registry import tables as _registry_tables  # noqa: F401
from modelplane.serving import tables as _serving_tables  # noqa: F401

metadata = Base.metadata
