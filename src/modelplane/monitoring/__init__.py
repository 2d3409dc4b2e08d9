"""Monitoring: Prometheus metrics (``metrics``), usage metering and cost (``usage``).

``create_app`` builds one ``Metrics`` and one usage meter per app and puts
them on ``app.state.metrics`` and ``app.state.usage``; nothing here holds
global state.
"""

from modelplane.monitoring.metrics import BatchMonitor, DeploymentMetrics, Metrics

__all__ = ["BatchMonitor", "DeploymentMetrics", "Metrics"]
