"""Settings, read once at the entry point (app factory or CLI) and passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of a modelplane server; environment variables use the ``MODELPLANE_`` prefix."""

    model_config = SettingsConfigDict(env_prefix="MODELPLANE_", extra="ignore")

    data_dir: Path = Field(default=Path(".modelplane"), description="Root of local state.")
    database_url: str = Field(default="", description="SQLAlchemy URL; default SQLite in data_dir.")
    store_url: str = Field(default="", description="Artifact store; default data_dir/artifacts.")
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "info"
    access_log: bool = Field(default=False, description="Log every request (costs ~60 us each).")
    runtime_spin: bool = Field(
        default=False, description="Let runtime threads busy-wait (faster on idle dedicated cores)."
    )
    max_upload_bytes: int = Field(default=10 * 1024**3, gt=0)
    max_unpacked_bytes: int = Field(default=40 * 1024**3, gt=0, description="Archive contents cap.")
    max_archive_members: int = Field(default=100_000, gt=0)
    max_infer_bytes: int = Field(default=64 * 1024**2, gt=0, description="Cap on inference bodies.")
    max_json_bytes: int = Field(default=1024**2, gt=0, description="Cap on JSON metadata bodies.")
    max_json_depth: int = Field(
        default=64, ge=0, description="Deepest JSON nesting accepted in any body (0: no cap)."
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, description="A client must send its request headers within this."
    )
    body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Longest silence while a client sends its body."
    )
    blob_gc_grace_seconds: float = Field(default=3600.0, ge=0)
    runtime_threads: int = Field(default=1, ge=1, description="Default threads per model worker.")
    shm_arena_bytes: int = Field(
        default=64 * 1024**2, ge=0, description="Shared memory per worker and direction (0: off)."
    )
    job_slots: int = Field(default=1, ge=0, description="Jobs `serve` runs at once (0: none).")
    job_poll_seconds: float = Field(default=1.0, gt=0)
    job_stale_seconds: float = Field(default=30.0, gt=0, description="Requeue after silence.")
    max_job_workers: int = Field(default=4, ge=1, description="Most data-parallel processes.")
    load_timeout_seconds: float = Field(default=300.0, gt=0)
    drain_seconds: float = Field(default=30.0, ge=0, description="Wait for a retired replica.")
    alias_poll_seconds: float = Field(default=2.0, gt=0, description="Check followed aliases.")
    # -- security (auth/) ------------------------------------------------------------
    auth: bool = Field(default=False, description="Require an API key on every call.")
    metrics_public: bool = Field(default=False, description="Serve /metrics without a key.")
    redis_url: str = Field(default="", description="Share rate-limit counters (redis://…).")
    bootstrap_key: SecretStr | None = Field(
        default=None, description="A key accepted as admin of tenant 'default' (16+ chars)."
    )
    auth_cache_seconds: float = Field(
        default=5.0, gt=0, description="Verified keys, grants and quotas are cached this long."
    )
    quota_requests_per_second: float = Field(default=0.0, ge=0, description="Per tenant; 0: off.")
    quota_burst: int = Field(default=0, ge=0, description="Per tenant; 0: one second's worth.")
    quota_key_requests_per_second: float = Field(default=0.0, ge=0, description="Per key.")
    quota_key_burst: int = Field(default=0, ge=0)
    quota_max_concurrent: int = Field(default=0, ge=0, description="Requests in flight per tenant.")
    quota_max_stored_bytes: int = Field(default=0, ge=0, description="Versions + datasets.")
    quota_max_jobs: int = Field(default=0, ge=0, description="Jobs queued or running per tenant.")
    # -- data protection (storage/) --------------------------------------------------
    encryption_key: SecretStr | None = Field(
        default=None,
        description="Encrypt blobs at rest: base64 32-byte key(s), 'new,old,…' to rotate.",
    )
    encryption_keys: SecretStr | None = Field(
        default=None, description="Same as encryption_key (either name; not two different lists)."
    )
    blob_cache_bytes: int = Field(
        default=20 * 1024**3,
        ge=0,
        description="Cap on decrypted copies of encrypted blobs (cache/blobs; LRU; 0: none).",
    )
    # -- metrics and usage (monitoring/) -------------------------------------------
    metrics: bool = Field(
        default=True, description="Request metrics and usage metering on the hot path."
    )
    usage_flush_seconds: float = Field(
        default=10.0, gt=0, description="Write metered usage to the database this often."
    )
    price_per_1k_requests: float = Field(default=0.0, ge=0, description="Cost per 1,000 calls.")
    price_per_compute_second: float = Field(
        default=0.0, ge=0, description="Cost per second of model (and job CPU) time."
    )
    price_per_gb_month: float = Field(default=0.0, ge=0, description="Cost of stored bytes.")
    # -- alerts (monitoring/alerts/) -------------------------------------------------
    alerts: bool = Field(default=True, description="Evaluate alert rules in the server.")
    alert_rules_file: Path | None = Field(
        default=None, description="YAML alert rules, read at start (read-only via the API)."
    )
    alert_interval_seconds: float = Field(default=15.0, gt=0, description="Rule evaluation.")
    alert_webhook_urls: str = Field(
        default="", description="Comma-separated URLs sent Alertmanager-format webhooks."
    )
    alert_webhook_attempts: int = Field(default=5, ge=1, le=100, description="Tries per message.")
    alert_webhook_backoff_seconds: float = Field(
        default=1.0, ge=0, description="Wait before the first retry; doubles each time."
    )
    alert_webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    alert_resolved_retention_seconds: float = Field(
        default=3600.0, ge=0, description="How long resolved alerts stay listed."
    )
    alert_max_samples: int = Field(
        default=240, ge=2, description="Metric snapshots kept for windowed rules."
    )
    external_url: str = Field(
        default="", description="How users reach this server (links in alerts); default host:port."
    )

    def secret_env(self) -> dict[str, str]:
        """Environment entries that hand the encryption keys to child processes (job runs)."""
        keys = self.encryption_keys or self.encryption_key
        if keys is None:
            return {}
        value = keys.get_secret_value()
        return {"MODELPLANE_ENCRYPTION_KEY": value, "MODELPLANE_ENCRYPTION_KEYS": value}

    def webhook_urls(self) -> list[str]:
        return [u.strip() for u in self.alert_webhook_urls.split(",") if u.strip()]

    def resolved_external_url(self) -> str:
        return (self.external_url or f"http://{self.host}:{self.port}").rstrip("/")

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'modelplane.db').resolve()}"

    def resolved_store_path(self) -> Path:
        url = self.store_url
        if not url:
            return (self.data_dir / "artifacts").resolve()
        if url.startswith("file://"):
            return Path(url.removeprefix("file://")).resolve()
        if "://" in url:
            raise ValueError(
                f"MODELPLANE_STORE_URL {url!r}: only local folders (file://…) are supported so far"
            )
        return Path(url).resolve()
