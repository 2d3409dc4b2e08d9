"""Alert rules made through the API (rules from the rules file are never stored)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from modelplane.db.base import Base, utcnow


class AlertRuleRow(Base):
    __tablename__ = "alert_rules"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column()  # AlertRuleSpec as JSON ("for" by alias)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
