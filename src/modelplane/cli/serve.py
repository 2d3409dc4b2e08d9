"""``modelplane serve`` and the commands that open the database directly."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from modelplane.settings import Settings

log = logging.getLogger("modelplane")
EXAMPLE = "double"


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
    svc = RegistryService(
        SqlRegistryStore(engine), BlobStore(settings.resolved_store_path()), settings
    )
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


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8080).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="State folder (default ./.modelplane).")
    ] = None,
    example: Annotated[bool, typer.Option(help="Register the example model if missing.")] = False,
) -> None:
    """Run migrations and start the server."""
    import uvicorn

    from modelplane.app import create_app

    overrides: dict[str, Any] = {"host": host, "port": port, "data_dir": data_dir}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)
    if example:
        register_example(settings)
    typer.echo(f"modelplane serving on http://{settings.host}:{settings.port}", err=True)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        http="httptools",
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
    """Delete artifact blobs that no version references (after the grace period)."""
    from modelplane.db import make_engine, upgrade
    from modelplane.registry import RegistryService, SqlRegistryStore
    from modelplane.storage import BlobStore

    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    svc = RegistryService(
        SqlRegistryStore(engine), BlobStore(settings.resolved_store_path()), settings
    )
    removed = svc.collect_garbage()
    engine.dispose()
    typer.echo(f"removed {len(removed)} unreferenced blob(s)")
