"""Database plumbing shared by every capability: metadata, engines, migrations."""

from modelplane.db.base import Base, utcnow
from modelplane.db.engine import make_engine, upgrade, writer

__all__ = ["Base", "make_engine", "upgrade", "utcnow", "writer"]
