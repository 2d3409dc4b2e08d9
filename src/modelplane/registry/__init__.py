"""The model registry: models, immutable versions, aliases with history, tags, lineage."""

from modelplane.registry.names import ModelRef, check_alias, check_name, parse_ref
from modelplane.registry.service import RegistryService, VersionMeta
from modelplane.registry.sql_store import SqlRegistryStore
from modelplane.registry.store import RegistryStore

__all__ = [
    "ModelRef",
    "RegistryService",
    "RegistryStore",
    "SqlRegistryStore",
    "VersionMeta",
    "check_alias",
    "check_name",
    "parse_ref",
]
