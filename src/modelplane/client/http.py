"""HTTP client for the management API. Errors come back as ``modelplane.errors`` classes."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from email.message import Message
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import httpx
from pydantic import BaseModel

from modelplane.client.packing import pack_directory
from modelplane.errors import InvalidInput, ModelplaneError, Unavailable, error_for_status
from modelplane.schemas.alerts import AlertList, AlertRule, AlertRuleSpec
from modelplane.schemas.auth import ApiKey, AuditEntry, EffectiveQuotas, Grant, NewApiKey, Tenant
from modelplane.schemas.datasets import Dataset
from modelplane.schemas.jobs import Job
from modelplane.schemas.registry import Alias, AliasEvent, Lineage, Model, Version
from modelplane.schemas.serving import Deployment
from modelplane.schemas.usage import UsageReport

if TYPE_CHECKING:
    from modelplane.client.text import Completion

Progress = Callable[[int, int], None]  # (bytes done, bytes total)
T = TypeVar("T", bound=BaseModel)
DEFAULT_URL = "http://127.0.0.1:8080"


class _ProgressReader:
    """File wrapper that reports how much of it httpx has read (for upload progress)."""

    def __init__(self, fh: IO[bytes], total: int, progress: Progress | None) -> None:
        self._fh, self._total, self._progress, self._done = fh, total, progress, 0

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self._done += len(data)
        if self._progress:
            self._progress(self._done, self._total)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def _split_ref(ref: str) -> tuple[str, str]:
    model, sep, selector = ref.partition("@")
    if sep and not selector:
        raise InvalidInput(f"invalid reference {ref!r}: nothing after '@'")
    return model, selector or "latest"


def _filename(disposition: str) -> str | None:
    """The filename of a Content-Disposition header (``filename*`` preferred, RFC 6266)."""
    msg = Message()
    msg["content-disposition"] = disposition
    return msg.get_filename()


class Client:
    """``Client(url)``; also reads ``MODELPLANE_URL`` and ``MODELPLANE_API_KEY``."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = url or os.environ.get("MODELPLANE_URL") or DEFAULT_URL
        api_key = api_key or os.environ.get("MODELPLANE_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------
    @staticmethod
    def _check(resp: httpx.Response) -> httpx.Response:
        if resp.is_success or resp.status_code == 304:
            return resp
        try:
            message = resp.json().get("error") or resp.text
        except (ValueError, AttributeError):
            message = resp.text or resp.reason_phrase
        raise error_for_status(resp.status_code, str(message))

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self._check(self._http.request(method, f"/api/v1{path}", **kw))

    def _get(self, cls: type[T], method: str, path: str, **kw: Any) -> T:
        return cls.model_validate(self._call(method, path, **kw).json())

    def _pages(self, path: str, key: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        params = {k: v for k, v in params.items() if v is not None}
        while True:
            body = self._call("GET", path, params=params).json()
            yield from body[key]
            if not body.get("next_page_token"):
                return
            params["page_token"] = body["next_page_token"]

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._check(self._http.get("/healthz")).json()
        return result

    def ready(self) -> dict[str, Any]:
        """``/readyz``: each dependency's check; raises ``Unavailable`` (503) when one fails."""
        result: dict[str, Any] = self._check(self._http.get("/readyz")).json()
        return result

    # -- usage and cost (implemented in client/usage.py) -----------------------------
    def usage(
        self, tenant: str | None = None, start: date | str | None = None,
        end: date | str | None = None, group_by: Sequence[str] = ("tenant",),
    ) -> UsageReport:  # fmt: skip
        """Metered use and cost from ``start`` to ``end`` (UTC days, both included), grouped
        by any of tenant, deployment and day; a non-admin key sees only its own tenant."""
        from modelplane.client import usage

        return usage.usage(self, tenant, start, end, group_by)

    def usage_csv(
        self, tenant: str | None = None, start: date | str | None = None,
        end: date | str | None = None, group_by: Sequence[str] = ("tenant",),
    ) -> str:  # fmt: skip
        """The same report as CSV text."""
        from modelplane.client import usage

        return usage.usage_csv(self, tenant, start, end, group_by)

    # -- models --------------------------------------------------------------
    def create_model(
        self, name: str, description: str = "", task: str = "", tags: dict[str, str] | None = None
    ) -> Model:
        body = {"name": name, "description": description, "task": task, "tags": tags or {}}
        return self._get(Model, "POST", "/models", json=body)

    def get_model(self, name: str) -> Model:
        return self._get(Model, "GET", f"/models/{name}")

    def list_models(
        self,
        prefix: str = "",
        tag: str | None = None,
        task: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Model]:
        """All matching models, fetched page by page."""
        params = {"prefix": prefix or None, "tag": tag, "task": task, "limit": page_size}
        return (Model.model_validate(m) for m in self._pages("/models", "models", params))

    def update_model(
        self,
        name: str,
        *,
        description: str | None = None,
        task: str | None = None,
        tags: dict[str, str] | None = None,
        remove_tags: list[str] | None = None,
        trusted: bool | None = None,
    ) -> Model:
        """``trusted`` (admin only) lets the model's pickle-based artifacts load; marking a
        model trusted retries its deployments that failed for want of trust."""
        body = {
            "description": description, "task": task, "tags": tags, "remove_tags": remove_tags,
            "trusted": trusted,
        }  # fmt: skip
        body = {k: v for k, v in body.items() if v is not None}
        return self._get(Model, "PATCH", f"/models/{name}", json=body)

    def delete_model(self, name: str) -> None:
        self._call("DELETE", f"/models/{name}")

    # -- versions ------------------------------------------------------------
    def upload_version(
        self,
        model: str,
        path: str | os.PathLike[str],
        format: str,
        *,
        description: str = "",
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        parents: list[str] | None = None,
        source: dict[str, Any] | None = None,
        signature: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> Version:
        """Upload a file, or a directory (packed as tar), as the model's next version."""
        src = Path(path)
        meta: dict[str, Any] = {
            "format": format,
            "description": description,
            "params": params or {},
            "metrics": metrics or {},
            "tags": tags or {},
            "parents": parents or [],
            "source": source or {},
        }
        if signature is not None:
            meta["signature"] = signature
        packed = pack_directory(src) if src.is_dir() else None
        upload = packed or src
        if packed:
            meta["packaging"] = "tar"
        filename = f"{src.name}.tar" if packed else src.name
        try:
            with open(upload, "rb") as fh:
                reader = _ProgressReader(fh, upload.stat().st_size, progress)
                return self._get(
                    Version,
                    "POST",
                    f"/models/{model}/versions",
                    data={"metadata": json.dumps(meta)},
                    files={"file": (filename, reader, "application/octet-stream")},
                    timeout=None,
                )
        finally:
            if packed:
                packed.unlink(missing_ok=True)

    def upload_sklearn(self, model: str, estimator: Any, sample_X: Any, **meta: Any) -> Version:
        """Convert a fitted scikit-learn estimator to ONNX (skl2onnx) and upload it."""
        from modelplane.client.sklearn import upload_sklearn

        return upload_sklearn(self, model, estimator, sample_X, **meta)

    def get_version(self, ref: str) -> Version:
        """``ref`` is ``name``, ``name@3`` or ``name@alias``."""
        return self._get(Version, "GET", f"/resolve/{ref}")

    def list_versions(
        self, model: str, tag: str | None = None, order: str = "desc", page_size: int = 100
    ) -> Iterator[Version]:
        params = {"tag": tag, "order": order, "limit": page_size}
        pages = self._pages(f"/models/{model}/versions", "versions", params)
        return (Version.model_validate(v) for v in pages)

    def update_version(
        self,
        ref: str,
        *,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        remove_tags: list[str] | None = None,
        description: str | None = None,
    ) -> Version:
        model, sel = _split_ref(ref)
        body = {
            "metrics": metrics,
            "tags": tags,
            "remove_tags": remove_tags,
            "description": description,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return self._get(Version, "PATCH", f"/models/{model}/versions/{sel}", json=body)

    def delete_version(self, model: str, version: int) -> None:
        self._call("DELETE", f"/models/{model}/versions/{version}")

    def _fetch(
        self, path: str, dest: str | os.PathLike[str], fallback: str, progress: Progress | None
    ) -> Path:
        """Stream ``path`` to ``dest`` (a file, or a folder for it); checks the sha256 ETag."""
        out = Path(dest)
        with self._http.stream("GET", f"/api/v1{path}", timeout=None) as resp:
            if not resp.is_success:
                resp.read()
                self._check(resp)
            expected = resp.headers.get("etag", "").strip('"')
            if out.is_dir():
                name = _filename(resp.headers.get("content-disposition", "")) or fallback
                out = out / Path(name).name
            total = int(resp.headers.get("content-length", 0))
            tmp = out.with_name(out.name + ".part")
            digest = hashlib.sha256()
            done = 0
            try:
                with open(tmp, "wb") as fh:
                    for chunk in resp.iter_bytes(1024 * 1024):
                        fh.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
                if expected and digest.hexdigest() != expected:
                    raise ModelplaneError(f"download of {path} is corrupt: sha256 mismatch")
                os.replace(tmp, out)
            finally:
                tmp.unlink(missing_ok=True)
        return out

    def download(
        self, ref: str, dest: str | os.PathLike[str], progress: Progress | None = None
    ) -> Path:
        """Stream the artifact to ``dest`` (a file, or a folder to put it in); checks sha256."""
        model, sel = _split_ref(ref)
        return self._fetch(
            f"/models/{model}/versions/{sel}/artifact", dest, f"{model}.bin", progress
        )

    def lineage(self, ref: str) -> Lineage:
        model, sel = _split_ref(ref)
        return self._get(Lineage, "GET", f"/models/{model}/versions/{sel}/lineage")

    # -- aliases -------------------------------------------------------------
    def set_alias(self, model: str, alias: str, version: int) -> Alias:
        return self._get(
            Alias, "PUT", f"/models/{model}/aliases/{alias}", json={"version": version}
        )

    def delete_alias(self, model: str, alias: str) -> None:
        self._call("DELETE", f"/models/{model}/aliases/{alias}")

    def list_aliases(self, model: str) -> list[Alias]:
        body = self._call("GET", f"/models/{model}/aliases").json()
        return [Alias.model_validate(a) for a in body["aliases"]]

    def rollback_alias(self, model: str, alias: str) -> Alias:
        return self._get(Alias, "POST", f"/models/{model}/aliases/{alias}/rollback")

    def alias_history(self, model: str, alias: str | None = None) -> Iterator[AliasEvent]:
        pages = self._pages(f"/models/{model}/alias-history", "events", {"alias": alias})
        return (AliasEvent.model_validate(e) for e in pages)

    # -- deployments ---------------------------------------------------------
    def deploy(self, name: str, model: str, **config: Any) -> Deployment:
        """Serve ``model`` (``name``, ``name@3`` or ``name@alias``) as deployment ``name``.

        ``config``: max_batch_size, max_batch_delay_ms, max_queue, timeout_ms, instances, threads.
        """
        return self._get(
            Deployment, "POST", "/deployments", json={"name": name, "model": model, **config}
        )

    def get_deployment(self, name: str) -> Deployment:
        return self._get(Deployment, "GET", f"/deployments/{name}")

    def list_deployments(self) -> list[Deployment]:
        body = self._call("GET", "/deployments").json()
        return [Deployment.model_validate(d) for d in body["deployments"]]

    def update_deployment(self, name: str, **changes: Any) -> Deployment:
        return self._get(Deployment, "PATCH", f"/deployments/{name}", json=changes)

    def delete_deployment(self, name: str) -> None:
        self._call("DELETE", f"/deployments/{name}")

    def wait_ready(self, name: str, timeout: float = 120.0) -> Deployment:
        """Poll until the deployment serves (raises Unavailable if it failed or timed out)."""
        deadline = time.monotonic() + timeout
        while True:
            dep = self.get_deployment(name)
            if dep.state == "ready":
                return dep
            if dep.state == "failed":
                raise Unavailable(f"deployment {name!r} failed: {dep.reason}")
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"deployment {name!r} not ready after {timeout:.0f} s ({dep.state})"
                )
            time.sleep(0.1)

    # -- text generation (implemented in client/text.py) ------------------------
    def complete(
        self, deployment: str, prompt: str, max_tokens: int | None = None, **params: Any
    ) -> Completion:
        """Complete ``prompt`` (OpenAI fields in ``params``: temperature, seed, stop, n, …)."""
        from modelplane.client import text

        return text.complete(self, deployment, prompt, None, max_tokens, **params)

    def chat(
        self, deployment: str, messages: list[dict[str, Any]], max_tokens: int | None = None,
        **params: Any,
    ) -> Completion:  # fmt: skip
        """Answer a chat (``[{"role": "user", "content": "..."}, ...]``)."""
        from modelplane.client import text

        return text.complete(self, deployment, None, messages, max_tokens, **params)

    def stream(
        self, deployment: str, prompt: str | None = None,
        messages: list[dict[str, Any]] | None = None, max_tokens: int | None = None,
        **params: Any,
    ) -> Iterator[str]:  # fmt: skip
        """Text pieces as they are generated, for a prompt or (given ``messages``) a chat."""
        from modelplane.client import text

        return text.stream(self, deployment, prompt, messages, max_tokens, **params)

    # -- datasets (implemented in client/datasets.py) ---------------------------
    def upload_dataset(
        self,
        name: str,
        path: str | os.PathLike[str],
        format: str | None = None,
        description: str = "",
        tags: dict[str, str] | None = None,
        progress: Progress | None = None,
    ) -> Dataset:
        """Upload a CSV/Parquet/NPZ/JSONL file, a zip of ``<class>/<image>``, or such a folder."""
        from modelplane.client import datasets

        return datasets.upload_dataset(self, name, path, format, description, tags, progress)

    def list_datasets(self, prefix: str = "", page_size: int = 100) -> Iterator[Dataset]:
        from modelplane.client import datasets

        return datasets.list_datasets(self, prefix, page_size)

    def get_dataset(self, name: str) -> Dataset:
        from modelplane.client import datasets

        return datasets.get_dataset(self, name)

    def download_dataset(
        self, name: str, dest: str | os.PathLike[str], progress: Progress | None = None
    ) -> Path:
        from modelplane.client import datasets

        return datasets.download_dataset(self, name, dest, progress)

    def delete_dataset(self, name: str) -> None:
        from modelplane.client import datasets

        datasets.delete_dataset(self, name)

    # -- jobs ------------------------------------------------------------------
    def submit_job(self, spec: dict[str, Any]) -> Job:
        """Queue a job: ``{"kind": "train", "dataset": ..., ...}`` (see the README)."""
        return self._get(Job, "POST", "/jobs", json=spec)

    def get_job(self, job_id: str) -> Job:
        return self._get(Job, "GET", f"/jobs/{job_id}")

    def list_jobs(
        self, state: str | None = None, kind: str | None = None, page_size: int = 100
    ) -> Iterator[Job]:
        params = {"state": state, "kind": kind, "limit": page_size}
        return (Job.model_validate(j) for j in self._pages("/jobs", "jobs", params))

    def cancel_job(self, job_id: str) -> Job:
        return self._get(Job, "POST", f"/jobs/{job_id}/cancel")

    def job_logs(self, job_id: str, follow: bool = False) -> Iterator[str]:
        """Log lines; with ``follow``, streamed until the job ends."""
        if not follow:
            body = self._call("GET", f"/jobs/{job_id}/logs").json()
            yield from (line["line"] for line in body["lines"])
            return
        with self._http.stream(
            "GET", f"/api/v1/jobs/{job_id}/logs", params={"follow": "true"}, timeout=None
        ) as resp:
            if not resp.is_success:
                resp.read()
                self._check(resp)
            yield from resp.iter_lines()

    def download_job_output(
        self, job_id: str, dest: str | os.PathLike[str], progress: Progress | None = None
    ) -> Path:
        """The file a finished batch-prediction job wrote (JSONL or Parquet)."""
        return self._fetch(f"/jobs/{job_id}/output", dest, f"job-{job_id}.out", progress)

    def wait_job(self, job_id: str, timeout: float = 3600.0, poll: float = 0.5) -> Job:
        """Poll until the job is succeeded, failed or cancelled."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job.state in ("succeeded", "failed", "cancelled"):
                return job
            if time.monotonic() > deadline:
                raise Unavailable(f"job {job_id} still {job.state} after {timeout:.0f} s")
            time.sleep(poll)

    # -- tenants, keys, grants, quotas, audit (implemented in client/auth.py) ----------
    def create_tenant(self, name: str, description: str = "") -> Tenant:
        from modelplane.client import auth

        return auth.create_tenant(self, name, description)

    def list_tenants(self, page_size: int = 100) -> Iterator[Tenant]:
        from modelplane.client import auth

        return auth.list_tenants(self, page_size)

    def get_quotas(self, tenant: str) -> EffectiveQuotas:
        """The tenant's configured quotas and what is enforced (0: unlimited)."""
        from modelplane.client import auth

        return auth.get_quotas(self, tenant)

    def set_quotas(self, tenant: str, **quotas: float | None) -> EffectiveQuotas:
        """Replace the tenant's quotas: requests_per_second, burst, key_requests_per_second,
        key_burst, max_concurrent, max_stored_bytes, max_jobs (left out: server default)."""
        from modelplane.client import auth

        return auth.set_quotas(self, tenant, quotas)

    def create_key(
        self, tenant: str, role: str, name: str = "", expires: str | None = None
    ) -> NewApiKey:
        """A new key (``.key`` is shown this once); ``expires``: ``30d``, ``12h`` or an ISO date."""
        from modelplane.client import auth

        return auth.create_key(self, tenant, role, name, expires)

    def list_keys(
        self, tenant: str | None = None, include_revoked: bool = False
    ) -> Iterator[ApiKey]:
        from modelplane.client import auth

        return auth.list_keys(self, tenant, include_revoked)

    def revoke_key(self, key_id: int) -> ApiKey:
        from modelplane.client import auth

        return auth.revoke_key(self, key_id)

    def grant(self, kind: str, name: str, tenant: str) -> Grant:
        """Let ``tenant`` use model or deployment ``name`` (as ``<owner>~<name>``)."""
        from modelplane.client import auth

        return auth.grant(self, kind, name, tenant)

    def list_grants(self, kind: str, name: str) -> list[Grant]:
        from modelplane.client import auth

        return auth.list_grants(self, kind, name)

    def revoke_grant(self, kind: str, name: str, tenant: str) -> None:
        from modelplane.client import auth

        auth.revoke_grant(self, kind, name, tenant)

    def tenant_grants(self) -> tuple[list[Grant], list[Grant]]:
        """(grants this tenant gave, grants it received)."""
        from modelplane.client import auth

        return auth.tenant_grants(self)

    def audit(self, **filters: Any) -> Iterator[AuditEntry]:
        """Audit entries, newest first; filters: tenant, actor, action (prefix), since, until."""
        from modelplane.client import auth

        return auth.audit(self, **filters)

    # -- alerts (implemented in client/alerts.py) ----------------------------------
    def alerts(self, state: str | None = None) -> AlertList:
        """Pending, firing and recently resolved alerts (``state`` filters)."""
        from modelplane.client import alerts

        return alerts.alerts(self, state)

    def list_alert_rules(self) -> list[AlertRule]:
        from modelplane.client import alerts

        return alerts.list_rules(self)

    def get_alert_rule(self, name: str) -> AlertRule:
        from modelplane.client import alerts

        return alerts.get_rule(self, name)

    def create_alert_rule(self, rule: AlertRuleSpec | dict[str, Any]) -> AlertRule:
        """A rule as in the rules file: ``{"name", "condition": {"kind", …}, "for", …}``."""
        from modelplane.client import alerts

        return alerts.create_rule(self, rule)

    def replace_alert_rule(self, name: str, rule: AlertRuleSpec | dict[str, Any]) -> AlertRule:
        from modelplane.client import alerts

        return alerts.replace_rule(self, name, rule)

    def delete_alert_rule(self, name: str) -> None:
        from modelplane.client import alerts

        alerts.delete_rule(self, name)

    def export_alert_rules(self) -> tuple[str, list[str]]:
        """(the rules as a Prometheus alerting-rules file, names of rules left out)."""
        from modelplane.client import alerts

        return alerts.export_rules(self)
