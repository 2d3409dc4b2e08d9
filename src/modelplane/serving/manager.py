"""The model manager: deployments, their worker processes, swaps and restarts.

A deployment follows a model reference. Pinned (``name@3``) it serves that
version; following an alias or ``latest`` it notices the move (registry
notification, or a poll for changes made by another server process), loads and
warms the new version in new workers, switches new requests to them, drains the
old replica and only then stops it: no request fails during a swap. If the new
version fails to load, the old one keeps serving and ``reason`` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from modelplane.errors import BadRequest, InvalidInput, NotFound, Unavailable
from modelplane.monitoring.metrics import Metrics
from modelplane.monitoring.ticket import TICKET
from modelplane.registry.names import ModelRef, check_name, parse_ref
from modelplane.registry.service import RegistryService
from modelplane.runtimes import RUNTIMES
from modelplane.runtimes.base import Arrays
from modelplane.schemas.registry import Signature, Version
from modelplane.schemas.serving import (
    Deployment,
    DeploymentConfig,
    DeploymentCreate,
    DeploymentUpdate,
    WorkerStatus,
)
from modelplane.serving.batcher import Batcher
from modelplane.serving.store import DeploymentStore, StoredDeployment
from modelplane.serving.streams import Streams, generation_options
from modelplane.serving.workers import LoadFailed, Worker
from modelplane.settings import Settings
from modelplane.storage.materialize import materialize

log = logging.getLogger("modelplane.serving")
TRUST_NEEDED = "mark the model trusted"  # in the runtimes' refusals of untrusted artifacts


class Sharing(Protocol):
    """Grants between tenants (``modelplane.auth.grants``); in memory, cheap to ask."""

    def allows(self, grantee: str, kind: str, owner: str, name: str) -> bool: ...

    def forget(self, owner: str, kind: str, name: str) -> int: ...


@dataclass(eq=False)
class Replica:
    version: int
    fmt: str
    signature: Signature
    batcher: Batcher
    workers: list[Worker] = field(default_factory=list)
    retired: bool = False
    streams: Streams | None = None  # text generation: slots, wait queue, routing


@dataclass(eq=False)
class Deployed:
    tenant: str
    name: str
    model: str
    config: DeploymentConfig
    created_at: datetime
    updated_at: datetime
    state: str = "loading"
    reason: str | None = None
    active: Replica | None = None
    loading: int | None = None
    failed_version: int | None = None
    failed_for_trust: bool = False  # it failed because its model was not trusted
    restarts: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    deleted: bool = False
    unloaded: bool = False  # by the repository extension's unload, until a load


class ModelManager:
    def __init__(
        self, registry: RegistryService, store: DeploymentStore, settings: Settings
    ) -> None:
        self.registry = registry
        self.store = store
        self.settings = settings
        self.cache_dir = settings.data_dir.resolve() / "cache" / "artifacts"
        self.deployments: dict[tuple[str, str], Deployed] = {}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.grants: Sharing | None = None  # set by the app: models shared by other tenants
        self.metrics: Metrics | None = None  # set by the app (None: nothing recorded)

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.registry.listeners.append(self.notify)
        for stored in await asyncio.to_thread(self.store.all):
            dep = self._deployed(stored)
            self.deployments[(dep.tenant, dep.name)] = dep
        self._spawn(self._watch())
        self.notify()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(self._unload(d) for d in self.deployments.values()))
        with contextlib.suppress(ValueError):
            self.registry.listeners.remove(self.notify)

    def notify(self) -> None:
        """Something in the registry changed: re-check what deployments follow (thread-safe)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _deployed(s: StoredDeployment) -> Deployed:
        return Deployed(
            s.tenant,
            s.name,
            s.model,
            DeploymentConfig.model_validate(s.config),
            s.created_at,
            s.updated_at,
        )

    # -- management ----------------------------------------------------------
    def lookup(self, tenant: str, name: str) -> Deployed:
        dep = self.deployments.get((tenant, name))
        if dep is None:
            raise NotFound(f"deployment {name!r} not found")
        return dep

    async def create(self, tenant: str, body: DeploymentCreate) -> Deployment:
        check_name(body.name, "deployment name")
        await self._resolve_checked(tenant, body.model)
        config = DeploymentConfig.model_validate(body.model_dump(exclude={"name", "model"}))
        stored = await asyncio.to_thread(
            self.store.create, tenant, body.name, body.model, config.model_dump()
        )
        await self._forget_grants(tenant, body.name)  # a reused name starts unshared
        dep = self._deployed(stored)
        self.deployments[(tenant, body.name)] = dep
        self.notify()
        return self.status(dep)

    async def update(self, tenant: str, name: str, body: DeploymentUpdate) -> Deployment:
        dep = self.lookup(tenant, name)
        changes = body.model_dump(exclude_unset=True, exclude_none=True)
        model = changes.pop("model", dep.model)
        if model != dep.model:
            await self._resolve_checked(tenant, model)
        config = dep.config.model_copy(update=changes)
        config = DeploymentConfig.model_validate(config.model_dump())
        stored = await asyncio.to_thread(
            self.store.update, tenant, name, model, config.model_dump()
        )
        rescale = (config.instances, config.threads) != (dep.config.instances, dep.config.threads)
        if dep.active is not None and dep.active.streams is not None:  # engine limits: reload
            dep.active.streams.max_queue = config.max_queue
            rescale = rescale or generation_options(config) != generation_options(dep.config)
        same_model = model == dep.model
        dep.model, dep.config, dep.updated_at = model, config, stored.updated_at
        if dep.active is not None:
            b = dep.active.batcher
            b.max_batch_size, b.max_queue = config.max_batch_size, config.max_queue
            b.max_delay = config.max_batch_delay_ms / 1000
        dep.failed_version = None
        if rescale and same_model and dep.active is not None:
            self._spawn(self._load(dep, force=True))
        self.notify()
        return self.status(dep)

    async def delete(self, tenant: str, name: str) -> None:
        dep = self.lookup(tenant, name)
        await asyncio.to_thread(self.store.delete, tenant, name)
        await self._forget_grants(tenant, name)
        dep.deleted = True
        self.deployments.pop((tenant, name), None)
        await self._unload(dep)

    async def _forget_grants(self, tenant: str, name: str) -> None:
        if self.grants is not None:
            await asyncio.to_thread(self.grants.forget, tenant, "deployment", name)

    def model_changed(self, owner: str, model: str) -> None:
        """``owner``'s ``model`` changed in a way that may let a failed load pass (it was
        marked trusted): deployments of it try their failed version once more."""
        for dep in list(self.deployments.values()):  # may run in a route's worker thread
            with contextlib.suppress(NotFound, InvalidInput):
                source, ref = self.source(dep.tenant, dep.model)
                if (source, ref.model) == (owner, model):
                    dep.failed_version = None
        self.notify()

    async def load(self, tenant: str, name: str) -> Deployment:
        """Make sure a deployment is loaded; a registry model of that name gets one."""
        dep = self.deployments.get((tenant, name))
        if dep is None:
            await self.create(tenant, DeploymentCreate(name=name, model=name))
            dep = self.lookup(tenant, name)
        dep.unloaded = False
        await self._load(dep, force=dep.active is None)
        if dep.active is None:
            raise BadRequest(f"failed to load {name!r}: {dep.reason}")
        return self.status(dep)

    async def unload(self, tenant: str, name: str) -> Deployment:
        """Stop serving (and free the workers' memory) but keep the deployment."""
        dep = self.lookup(tenant, name)
        dep.unloaded = True
        await self._unload(dep)
        dep.state, dep.reason = "unloaded", None
        return self.status(dep)

    def list(self, tenant: str) -> list[Deployment]:
        return [self.status(d) for (t, _), d in sorted(self.deployments.items()) if t == tenant]

    def status(self, dep: Deployed) -> Deployment:
        r = dep.active
        return Deployment(
            name=dep.name,
            model=dep.model,
            state=dep.state,
            reason=dep.reason,
            version=r.version if r else None,
            format=r.fmt if r else None,
            signature=r.signature.model_dump() if r else None,
            workers=[WorkerStatus(pid=w.pid, alive=w.alive) for w in (r.workers if r else [])],
            restarts=dep.restarts,
            batches=r.batcher.stats.batches if r else 0,
            batched_items=r.batcher.stats.items if r else 0,
            **(r.streams.status() if r and r.streams else {}),
            created_at=dep.created_at,
            updated_at=dep.updated_at,
            **dep.config.model_dump(),
        )

    def source(self, tenant: str, model: str) -> tuple[str, ModelRef]:
        """(owning tenant, reference) of a model reference; ``owner~name[@sel]`` names a model
        another tenant shared with ``tenant`` (404, as for any unknown model, if it did not)."""
        owner, sep, rest = model.partition("~")
        if not sep:
            return tenant, parse_ref(model)
        ref = parse_ref(rest)
        if not (owner and self.grants and self.grants.allows(tenant, "model", owner, ref.model)):
            raise NotFound(f"model {f'{owner}~{ref.model}'!r} not found")
        return owner, ref

    async def _resolve_checked(self, tenant: str, model: str) -> Version:
        owner, ref = self.source(tenant, model)
        version = await asyncio.to_thread(self.registry.store.get_version, owner, ref)
        if version.format not in RUNTIMES:
            raise InvalidInput(f"no runtime serves format {version.format!r} yet")
        return version

    # -- inference (hot path) ------------------------------------------------
    async def infer(
        self, dep: Deployed, version: int | None, inputs: Arrays, timeout_ms: float | None = None
    ) -> tuple[Replica, Arrays]:
        replica = self.serving(dep, version)
        timeout = (timeout_ms if timeout_ms is not None else dep.config.timeout_ms) / 1000
        return replica, await replica.batcher.submit(inputs, time.monotonic() + timeout)

    def serving(self, dep: Deployed, version: int | None = None) -> Replica:
        """The replica that takes new requests (503 while there is none)."""
        replica = dep.active
        if replica is None:
            if dep.state == "failed":
                raise Unavailable(f"deployment {dep.name!r} failed to load: {dep.reason}", 5)
            if dep.state == "unloaded":
                raise Unavailable(f"deployment {dep.name!r} is unloaded", retry_after=5)
            raise Unavailable(f"deployment {dep.name!r} is still loading", retry_after=1)
        if version is not None and version != replica.version:
            raise NotFound(
                f"version {version} of {dep.name!r} is not loaded "
                f"(serving version {replica.version})"
            )
        ticket = TICKET.get()
        if ticket is not None:  # the request's metrics carry the version that answered it
            ticket.version = str(replica.version)
        return replica

    # -- loading and swapping ------------------------------------------------
    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.alias_poll_seconds)
            self._wake.clear()
            for dep in list(self.deployments.values()):
                if not dep.lock.locked() and not dep.unloaded:
                    self._spawn(self._load(dep))

    async def _load(self, dep: Deployed, force: bool = False) -> None:
        async with dep.lock:
            if dep.deleted or dep.unloaded:
                return
            try:
                owner, ref = self.source(dep.tenant, dep.model)
                version = await asyncio.to_thread(self.registry.store.get_version, owner, ref)
            except NotFound as exc:
                if dep.active is None:
                    dep.state, dep.reason = "failed", exc.message
                elif "~" in dep.model:  # a shared model: its owner revoked the grant
                    replica, dep.active = dep.active, None
                    dep.state, dep.reason = "failed", exc.message
                    await self._retire(replica)
                return
            current = dep.active.version if dep.active else None
            if not force and version.version == dep.failed_version and dep.failed_for_trust:
                # trusted since (perhaps through another server process)? then try again
                with contextlib.suppress(NotFound):  # deleted meanwhile: the next poll says so
                    model = await asyncio.to_thread(self.registry.store.get_model, owner, ref.model)
                    if model.trusted:
                        dep.failed_version = None
            if not force and (version.version == current or version.version == dep.failed_version):
                return
            dep.loading = version.version
            if dep.active is None:
                dep.state, dep.reason = "loading", None
            try:
                replica = await self._start_replica(dep, version, owner)
            except (LoadFailed, InvalidInput, OSError) as exc:
                why = exc.message if isinstance(exc, InvalidInput) else str(exc)
                dep.failed_version = version.version
                dep.failed_for_trust = TRUST_NEEDED in why
                if dep.active is None:
                    dep.state, dep.reason = "failed", f"version {version.version}: {why}"
                else:
                    dep.reason = (
                        f"version {version.version} failed to load: {why}; "
                        f"still serving version {dep.active.version}"
                    )
                log.warning("deployment %s: %s", dep.name, dep.reason)
                return
            finally:
                dep.loading = None
            if dep.deleted:
                await self._retire(replica)
                return
            old, dep.active = dep.active, replica
            dep.state, dep.reason, dep.failed_version = "ready", None, None
            log.info("deployment %s now serves %s@%d", dep.name, version.model, version.version)
            if old is not None:
                await self._retire(old)

    async def _start_replica(self, dep: Deployed, version: Version, owner: str) -> Replica:
        path = await asyncio.to_thread(self._materialize, owner, version)
        model = await asyncio.to_thread(self.registry.store.get_model, owner, version.model)
        options = {
            "intra_op_threads": dep.config.threads or self.settings.runtime_threads,
            "inter_op_threads": 1,
            "spin": self.settings.runtime_spin,
            "task": model.task,
            "trusted": model.trusted,  # pickle-based formats load only for trusted models
            "signature": version.signature.model_dump() if version.signature.inputs else None,
            "extra": generation_options(dep.config),
        }
        arena = self.settings.shm_arena_bytes
        workers = [
            Worker(version.format, str(path), options, arena) for _ in range(dep.config.instances)
        ]
        started = time.monotonic()
        results = await asyncio.gather(
            *(w.start(self.settings.load_timeout_seconds) for w in workers), return_exceptions=True
        )
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if self.metrics is not None and self.metrics.enabled:
            if failure is None:
                self.metrics.model_load.labels(version.format).observe(time.monotonic() - started)
            else:
                self.metrics.model_load_failures.labels(version.format).inc()
        if failure is not None:
            await asyncio.gather(*(w.stop(1.0) for w in workers))
            if isinstance(failure, LoadFailed | InvalidInput | OSError):
                raise failure
            raise LoadFailed(str(failure)) from failure
        c = dep.config
        replica = Replica(
            version.version,
            version.format,
            Signature.model_validate(workers[0].signature),
            Batcher(c.max_batch_size, c.max_batch_delay_ms / 1000, c.max_queue),
        )
        if self.metrics is not None:
            replica.batcher.monitor = self.metrics.batch_monitor(
                dep.tenant, dep.name, str(version.version)
            )
        if workers[0].generation is not None:
            gen, v = workers[0].generation, version.version
            replica.streams = Streams(replica.workers, gen, c.max_batch_size, c.max_queue, v)
        for w in workers:
            self._attach(dep, replica, w)
        return replica

    def _attach(self, dep: Deployed, replica: Replica, worker: Worker) -> None:
        replica.workers.append(worker)
        replica.batcher.add_worker(worker)
        worker.on_exit = lambda w: self._on_worker_exit(dep, replica, w)
        if replica.streams is not None:
            replica.streams.pump()  # a restarted worker's free slots go to waiting streams

    def _on_worker_exit(self, dep: Deployed, replica: Replica, worker: Worker) -> None:
        if replica.retired or dep.deleted:
            return
        log.warning("deployment %s: worker %s exited; restarting", dep.name, worker.pid)
        replica.batcher.remove_worker(worker)
        with contextlib.suppress(ValueError):
            replica.workers.remove(worker)
        dep.restarts += 1
        if self.metrics is not None and self.metrics.enabled:
            self.metrics.deployment(dep.tenant, dep.name).restarts.inc()
        self._spawn(self._restart(dep, replica, worker))

    async def _restart(self, dep: Deployed, replica: Replica, dead: Worker) -> None:
        delay = 0.1
        while not (replica.retired or dep.deleted):
            worker = Worker(dead.fmt, dead.artifact_dir, dead.options, dead.arena_bytes)
            try:
                await worker.start(self.settings.load_timeout_seconds)
            except LoadFailed as exc:
                dep.reason = f"worker restart failed: {exc}"
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if replica.retired or dep.deleted:
                await worker.stop(1.0)
                return
            self._attach(dep, replica, worker)
            return

    async def _retire(self, replica: Replica) -> None:
        replica.retired = True
        await replica.batcher.drain(self.settings.drain_seconds)
        replica.batcher.close("deployment was updated; retry")
        if replica.streams is not None:  # streams in flight finish here first
            await replica.streams.drain(self.settings.drain_seconds)
            replica.streams.close("deployment was updated; retry")
        await asyncio.gather(*(w.stop() for w in replica.workers))

    async def _unload(self, dep: Deployed) -> None:
        async with dep.lock:
            if dep.active is not None:
                replica, dep.active = dep.active, None
                await self._retire(replica)

    def _materialize(self, tenant: str, version: Version) -> Path:
        """Unpack (or link) the artifact into the cache; reused across loads."""
        ref = parse_ref(f"{version.model}@{version.version}")
        _, blob = self.registry.artifact_path(tenant, ref)
        a = version.artifact
        return materialize(blob, a.sha256, a.packaging, a.filename, self.cache_dir)
