"""A job runner: N slots, each running one job in its own child process.

``modelplane serve`` starts one in a background thread; ``modelplane worker``
runs more as separate processes against the same database. A runner heartbeats
its jobs; one whose runner dies (heartbeat stale) is put back in the queue by
any other runner and resumes from its last checkpoint. Cancel kills the child.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from modelplane.jobs.store import JobStore
from modelplane.monitoring.metrics import Metrics
from modelplane.monitoring.usage_store import UsageStore
from modelplane.settings import Settings

log = logging.getLogger("modelplane.jobs")


@dataclass
class _Running:
    job_id: str
    proc: subprocess.Popen[bytes]
    cancelling_since: float | None = None
    kind: str = ""
    started: float = field(default_factory=time.monotonic)


class Runner:
    def __init__(self, store: JobStore, settings: Settings, slots: int | None = None) -> None:
        self.store = store
        self.settings = settings
        self.slots = slots if slots is not None else settings.job_slots
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.running: dict[str, _Running] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.usage: UsageStore | None = None  # set by the app: CPU and wall time per job run
        self.metrics: Metrics | None = None  # set by the app: job state transitions

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="job-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs; running ones are killed and requeued (they resume elsewhere)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for r in list(self.running.values()):
            _terminate(r.proc)
        self.store.fail_running_of(self.id, "requeued: its runner stopped")
        self.running.clear()

    def run(self) -> None:
        log.info("job runner %s with %d slot(s)", self.id, self.slots)
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the loop must survive a database hiccup
                log.exception("job runner tick failed")
            self._stop.wait(self.settings.job_poll_seconds)

    def tick(self) -> None:
        self.store.requeue_stale(self.settings.job_stale_seconds)
        for job_id, r in list(self.running.items()):
            self._watch(job_id, r)
        while len(self.running) < self.slots and not self._stop.is_set():
            job = self.store.claim(self.id)
            if job is None:
                break
            log.info(
                "runner %s took job %s (%s, attempt %d)", self.id, job.id, job.kind, job.attempts
            )
            self.running[job.id] = _Running(job.id, self._spawn(job.id), kind=job.kind)
            if self.metrics is not None:
                self.metrics.job_transitions.labels(job.kind, "running").inc()

    def _spawn(self, job_id: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "MODELPLANE_DATA_DIR": str(self.settings.data_dir.resolve()),
            "MODELPLANE_DATABASE_URL": self.settings.resolved_database_url(),
            "MODELPLANE_STORE_URL": str(self.settings.resolved_store_path()),
            "PYTHONUNBUFFERED": "1",
            **self.settings.secret_env(),  # encrypted blobs: the job reads and writes them too
        }
        cmd = [sys.executable, "-m", "modelplane.jobs.child", job_id, self.id, str(os.getpid())]
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, start_new_session=True)

    def _watch(self, job_id: str, r: _Running) -> None:
        code = self._reap(r)
        if code is not None:
            del self.running[job_id]
            # The child records success or failure itself; reaching here with the job still
            # "running" means it died without a word (killed, OOM, segfault).
            if r.cancelling_since is not None:
                self.store.finish(job_id, self.id, "cancelled")
            elif self.store.finish(job_id, self.id, "failed", error=f"job process exited ({code})"):
                log.warning("job %s: process exited with %s", job_id, code)
            if self.metrics is not None:
                with contextlib.suppress(Exception):  # a metric is not worth failing the tick
                    state = self.store.get(None, job_id).state
                    self.metrics.job_transitions.labels(r.kind, state).inc()
            return
        if self.store.heartbeat(job_id, self.id) and r.cancelling_since is None:
            log.info("job %s: cancel requested", job_id)
            r.cancelling_since = time.monotonic()
            _signal_group(r.proc, signal.SIGTERM)
        elif r.cancelling_since is not None and time.monotonic() - r.cancelling_since > 3:
            _signal_group(r.proc, signal.SIGKILL)

    def _reap(self, r: _Running) -> int | None:
        """The child's exit code once it ended (``None`` while it runs), metering its run.

        ``os.wait4`` instead of ``Popen.poll``: it also gives the CPU time of the job process
        and of every process it waited for (data-parallel workers)."""
        if r.proc.returncode is not None:
            return r.proc.returncode
        try:
            pid, status, rusage = os.wait4(r.proc.pid, os.WNOHANG)
        except ChildProcessError:  # already reaped elsewhere
            return r.proc.poll()
        if pid == 0:
            return None
        r.proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - r.started
        try:
            if self.usage is not None:
                cpu = rusage.ru_utime + rusage.ru_stime
                tenant = self.store.tenant_of(r.job_id)
                self.usage.add_job(r.job_id, tenant, r.kind, cpu, wall)
        except Exception:  # metering must not stop the runner from finishing the job
            log.exception("job %s: recording its resource use failed", r.job_id)
        return r.proc.returncode


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """The job and everything it started (data-parallel workers share its process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(3)
