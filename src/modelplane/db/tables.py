"""Imports every table module so ``metadata`` is complete (used by Alembic)."""

from modelplane.db.base import Base
from modelplane.registry import tables as _registry_tables  # noqa: F401
from modelplane.serving import tables as _serving_tables  # noqa: F401

metadata = Base.metadata
