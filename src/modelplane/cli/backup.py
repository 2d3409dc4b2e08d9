"""``modelplane backup FILE``, ``modelplane restore FILE`` and ``modelplane rekey``.

These open the database and the artifact store directly (like ``serve`` and
``gc``), with the same ``MODELPLANE_*`` settings a server uses. A backup may be
taken while a server runs; a restore goes into an empty data dir (and an
empty database, for PostgreSQL) before any server starts there.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelplane.settings import Settings

if TYPE_CHECKING:
    from modelplane.db.snapshot import Snapshot
    from modelplane.storage import BlobStore

DataDir = Annotated[
    Path | None, typer.Option(help="State folder (default MODELPLANE_DATA_DIR or ./.modelplane).")
]


def _settings(data_dir: Path | None) -> Settings:
    overrides: dict[str, Any] = {"data_dir": data_dir} if data_dir else {}
    return Settings(**overrides)


def backup(
    file: Annotated[Path, typer.Argument(help="The backup to write (.tar, or .tar.gz).")],
    data_dir: DataDir = None,
) -> None:
    """Back up the database and every artifact into one file, written atomically."""
    from modelplane.db import make_engine
    from modelplane.db import snapshot as snap
    from modelplane.errors import Conflict
    from modelplane.storage import BlobStore
    from modelplane.storage.backup import BackupError, write_backup

    settings = _settings(data_dir)
    url = settings.resolved_database_url()
    if url.startswith("sqlite") and not settings.data_dir.exists():
        raise Conflict(f"nothing to back up: {settings.data_dir} does not exist")
    engine = make_engine(url)
    blobs = BlobStore.from_settings(settings)
    file.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=file.parent, prefix=".modelplane-backup-") as work:
            taken = snap.take(engine, Path(work))
            # Load the snapshot into a scratch database: proves it restores, and says
            # exactly which blobs it needs.
            needed = _referenced_blobs(taken, Path(work) / "check.db")
            info = {"backend": engine.dialect.name, "kind": taken.kind, "revision": taken.revision}
            manifest = write_backup(file, taken.path, info, blobs)
    finally:
        engine.dispose()
    missing = needed - {b["digest"] for b in manifest["blobs"]}
    if missing:
        file.unlink(missing_ok=True)
        raise BackupError(
            f"{len(missing)} blob(s) the database references are not in the store "
            f"(e.g. {sorted(missing)[0]}); was `modelplane gc` running? Back up again."
        )
    size = sum(b["size"] for b in manifest["blobs"])
    typer.echo(
        f"backup {file}: database ({engine.dialect.name}, revision {taken.revision}), "
        f"{len(manifest['blobs'])} blob(s), {size} bytes of artifacts"
    )


def _referenced_blobs(taken: Snapshot, scratch: Path) -> set[str]:
    from modelplane.datasets.store import DatasetStore
    from modelplane.db import make_engine
    from modelplane.db import snapshot as snap
    from modelplane.jobs.store import JobStore
    from modelplane.registry import SqlRegistryStore

    engine = make_engine(f"sqlite:///{scratch}")
    try:
        snap.load(taken, engine)
        return (
            SqlRegistryStore(engine).referenced_blobs()
            | DatasetStore(engine).referenced_blobs()
            | JobStore(engine).referenced_blobs()
        )
    finally:
        engine.dispose()


def restore(
    file: Annotated[Path, typer.Argument(help="A file written by `modelplane backup`.")],
    data_dir: DataDir = None,
    force: Annotated[
        bool, typer.Option(help="Replace an existing database and artifacts (destroys them).")
    ] = False,
) -> None:
    """Restore a backup into an empty data dir, verifying every checksum first."""
    from modelplane.db import make_engine
    from modelplane.db import snapshot as snap
    from modelplane.errors import NotFound
    from modelplane.storage import BlobStore
    from modelplane.storage.backup import install_blobs, read_backup

    if not file.is_file():
        raise NotFound(f"no backup file {file}")
    settings = _settings(data_dir)
    target = _Target(settings)
    target.ensure_empty(force)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=settings.data_dir, prefix=".restore-"))
    try:
        manifest = read_backup(file, staging)
        db = manifest["database"]
        taken = snap.Snapshot(db["kind"], staging / db["path"], db["revision"])
        blobs = BlobStore.from_settings(settings)
        engine = make_engine(target.url)
        try:
            snap.load(taken, engine)
        finally:
            engine.dispose()
        count = install_blobs(staging, blobs)
    except BaseException:
        target.wipe()  # it was empty: leave it so
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    typer.echo(f"restored {file}: database revision {db['revision']}, {count} blob(s)")
    _warn_missing_keys(manifest, blobs)


def _warn_missing_keys(manifest: dict[str, Any], blobs: BlobStore) -> None:
    have = set(blobs.keys.ids()) if blobs.keys is not None else set()
    lacking = [k for k in manifest.get("key_ids", []) if k not in have]
    if lacking:
        typer.echo(
            f"warning: blobs are encrypted with key id(s) {', '.join(lacking)}, which the "
            "configured MODELPLANE_ENCRYPTION_KEY does not include: set it before serving",
            err=True,
        )


class _Target:
    """What a restore writes: the database and the blob store the settings name."""

    def __init__(self, settings: Settings) -> None:
        from sqlalchemy.engine import make_url

        self.data_dir = settings.data_dir.resolve()
        self.url = settings.resolved_database_url()
        self.store = settings.resolved_store_path()
        url = make_url(self.url)
        self.sqlite = Path(url.database or "") if url.get_backend_name() == "sqlite" else None

    def problems(self) -> list[str]:
        out = []
        if self.data_dir.exists() and any(
            not p.name.startswith(".restore-") for p in self.data_dir.iterdir()
        ):
            out.append(f"data dir {self.data_dir} is not empty")
        if self.store.is_dir() and any(p.is_file() for p in (self.store / "blobs").rglob("*")):
            out.append(f"artifact store {self.store} holds blobs")
        if self.sqlite is not None and self.sqlite.exists():
            out.append(f"database {self.sqlite} exists")
        if self.sqlite is None and self._pg_tables():
            out.append("the database has tables")
        return out

    def ensure_empty(self, force: bool) -> None:
        from modelplane.errors import Conflict

        problems = self.problems()
        if problems and not force:
            raise Conflict(f"refusing to restore: {'; '.join(problems)} (--force replaces them)")
        if problems:
            self.wipe()

    def wipe(self) -> None:
        """Remove what modelplane keeps here (never other files in the data dir)."""
        if self.sqlite is not None:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.sqlite}{suffix}").unlink(missing_ok=True)
        else:
            self._drop_pg_tables()
        for sub in ("blobs", "tmp"):
            shutil.rmtree(self.store / sub, ignore_errors=True)
        for sub in ("cache", "jobs"):
            shutil.rmtree(self.data_dir / sub, ignore_errors=True)

    def _pg_tables(self) -> list[str]:
        from sqlalchemy import inspect

        from modelplane.db import make_engine

        engine = make_engine(self.url)
        try:
            return list(inspect(engine).get_table_names())
        finally:
            engine.dispose()

    def _drop_pg_tables(self) -> None:
        from sqlalchemy import MetaData

        from modelplane.db import make_engine

        engine = make_engine(self.url)
        try:
            meta = MetaData()
            meta.reflect(engine)
            meta.drop_all(engine)
        finally:
            engine.dispose()


def rekey(data_dir: DataDir = None) -> None:
    """Re-encrypt every blob not sealed with the first key (after rotating keys)."""
    from modelplane.storage import BlobStore

    count = BlobStore.from_settings(_settings(data_dir)).rekey()
    typer.echo(f"re-encrypted {count} blob(s) with the first key; older keys may now be dropped")
