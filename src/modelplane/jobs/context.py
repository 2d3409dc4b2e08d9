"""What a running job may do: report progress, log, checkpoint, register results."""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path
from typing import Any

from modelplane.jobs.store import JobStore
from modelplane.registry.service import RegistryService
from modelplane.schemas.jobs import Job
from modelplane.settings import Settings

log = logging.getLogger("modelplane.jobs")


class JobContext:
    """Handed to a job kind's ``run``; also the training loop's callbacks object."""

    def __init__(
        self, job: Job, runner: str, store: JobStore, registry: RegistryService, settings: Settings,
        datasets: Any = None,
    ) -> None:  # fmt: skip
        self.job = job
        self.runner = runner
        self.store = store
        self.registry = registry
        self.settings = settings
        self.datasets = datasets  # DatasetService: lookup and files by tenant and name
        self.tenant = store.tenant_of(job.id)
        self._pending: list[str] = []
        self._flushed = time.monotonic()
        self._cancel_checked = 0.0
        self._cancelled = False

    # -- the training callbacks --------------------------------------------------
    def progress(self, epoch: int, total: int, metrics: dict[str, float]) -> None:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        self.log(f"epoch {epoch}/{total}: {shown}")
        self.flush()
        self.store.report(
            self.job.id, progress=epoch / max(total, 1), message=f"epoch {epoch}/{total}",
            metrics={"epoch": epoch, **metrics},
        )  # fmt: skip

    def checkpoint(self, state: dict[str, Any]) -> None:
        """Save a training state (torch.save into the blob store) to resume from after a crash."""
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        digest = self.registry.blobs.put_bytes(buf.getvalue())
        self.store.report(self.job.id, checkpoint=digest)

    def resume_state(self) -> dict[str, Any] | None:
        """The last checkpoint, when this is a second attempt; only plain data is loaded."""
        import torch

        digest = self.store.checkpoint_of(self.job.id)
        if not digest or not self.registry.blobs.exists(digest):
            return None
        state: dict[str, Any] = torch.load(
            self.registry.blobs.open_path(digest), map_location="cpu", weights_only=True
        )
        return state

    def put_file(self, path: Path) -> str:
        """Store a file in the blob store (streamed, hashed); returns its sha256."""
        writer = self.registry.blobs.writer(1 << 62)
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    writer.write(chunk)
            return writer.commit()
        except BaseException:
            writer.abort()
            raise

    def work_dir(self) -> Path:
        """A scratch folder for this job on this machine."""
        path = self.settings.data_dir.resolve() / "jobs" / self.job.id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self._cancel_checked > 1.0:
            self._cancel_checked = now
            self._cancelled = self.store.heartbeat(self.job.id, self.runner)
        return self._cancelled

    def log(self, line: str) -> None:
        self._pending.append(line)
        if len(self._pending) >= 50 or time.monotonic() - self._flushed > 1.0:
            self.flush()

    def flush(self) -> None:
        lines, self._pending = self._pending, []
        self.store.log(self.job.id, lines)
        self._flushed = time.monotonic()
