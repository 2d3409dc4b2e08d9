"""Alerts: rules over the server's own metrics, evaluated in process, with notifications.

- ``rules``: the rules file (YAML, read-only) and API-made rules in SQL (``RuleBook``).
- ``window``, ``conditions``: sampled metrics and what each condition means over them.
- ``state``: pending → firing → resolved per rule and series (``Tracker``).
- ``notify``: Alertmanager-format webhooks with retries, and a log notifier.
- ``evaluator``: the periodic round that ties them together; ``wiring.build`` makes one.
- ``promql``: the same rules as a Prometheus alerting-rules file.
"""

from modelplane.monitoring.alerts.evaluator import Evaluator
from modelplane.monitoring.alerts.rules import RuleBook

__all__ = ["Evaluator", "RuleBook"]
