"""One job's process: ``python -m modelplane.jobs.child JOB_ID RUNNER_ID``.

Settings come from the environment the runner passes. The job's own success or
failure is recorded here; a process that dies without a word is marked failed
by its runner, and one whose runner dies is requeued by another runner.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import traceback

from modelplane.datasets.service import DatasetService
from modelplane.datasets.store import DatasetStore
from modelplane.db import make_engine
from modelplane.jobs.context import JobContext
from modelplane.jobs.kinds import Cancelled, kind
from modelplane.jobs.store import JobStore
from modelplane.registry import RegistryService, SqlRegistryStore
from modelplane.settings import Settings
from modelplane.storage import BlobStore


def _die_with_runner(runner_pid: int) -> None:
    """A job must not outlive its runner: another runner takes the job over by then."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != runner_pid:  # the runner died before prctl took effect
        os._exit(1)


def main() -> None:
    job_id, runner = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3:
        _die_with_runner(int(sys.argv[3]))
    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    store = JobStore(engine)
    registry = RegistryService(
        SqlRegistryStore(engine), BlobStore.from_settings(settings), settings
    )
    job = store.get(None, job_id)
    datasets = DatasetService(DatasetStore(engine), registry.blobs, settings)
    ctx = JobContext(job, runner, store, registry, settings, datasets)
    try:
        k = kind(job.kind)
        spec = k.spec.model_validate(job.spec)
        ctx.log(f"{job.kind} job {job.id}: attempt {job.attempts}")
        result = k.run(spec, ctx)
    except Cancelled:
        ctx.log("cancelled")
        ctx.flush()
        store.finish(job_id, runner, "cancelled")
    except Exception as exc:  # noqa: BLE001 - any failure of the job is recorded as such
        ctx.log(traceback.format_exc())
        ctx.flush()
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        store.finish(job_id, runner, "failed", error=message)
        sys.exit(1)
    else:
        ctx.flush()
        store.finish(job_id, runner, "succeeded", result=result)
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
