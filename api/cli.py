"""Commands the service adds to ``gapmodel`` (entry points ``gapmodel.commands``):
``gapmodel keys create|list|revoke|demo`` and ``gapmodel serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

keys = typer.Typer(help="API keys of the HTTP service (stored hashed in DATABASE_URL).",
                   no_args_is_help=True)

DEMO_KEY_FILE = Path("models/demo-api-key")


def _database(url: str | None):
    from api.db import Database
    from api.settings import Settings

    return Database(url or Settings().database_url)


DatabaseOpt = Annotated[str | None, typer.Option(
    "--database-url", help="default: $DATABASE_URL or sqlite:///models/gapmodel.db")]


@keys.command("create")
def create(
    role: Annotated[str, typer.Option(help="viewer | outreach | analyst | admin")],
    name: Annotated[str, typer.Option(help="who or what the key is for")] = "",
    database_url: DatabaseOpt = None,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    db = _database(database_url)
    try:
        row, key = db.create_key(role, name)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"created key {row.id} ({row.role}, '{row.name}'); it is shown only now:",
               err=True)
    typer.echo(key)


@keys.command("list")
def list_keys(database_url: DatabaseOpt = None) -> None:
    """Every key: id, role, name, first characters, created, revoked."""
    rows = _database(database_url).api_keys()
    if not rows:
        typer.echo("no keys")
    for row in rows:
        revoked = f"revoked {row.revoked:%Y-%m-%d %H:%M}" if row.revoked else "live"
        typer.echo(f"{row.id:4} {row.role:9} {row.prefix}...  {row.name:30} "
                   f"{row.created:%Y-%m-%d %H:%M}  {revoked}")


@keys.command("revoke")
def revoke(key_id: Annotated[int, typer.Argument(help="key id (see keys list)")],
           database_url: DatabaseOpt = None) -> None:
    """Revoke a key at once."""
    row = _database(database_url).revoke_key(key_id)
    if row is None:
        typer.echo(f"error: no key {key_id}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"key {key_id} ({row.role}, '{row.name}') is revoked")


@keys.command("demo")
def demo_key(
    path: Annotated[Path, typer.Option(help="file that keeps the demo key")] = DEMO_KEY_FILE,
    database_url: DatabaseOpt = None,
) -> None:
    """Print the local demo analyst key, creating it (and its file) when missing."""
    db = _database(database_url)
    if path.exists():
        key = path.read_text().strip()
        if db.find_key(key) is not None:
            typer.echo(key)
            return
    _, key = db.create_key("analyst", "demo")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    typer.echo(key)


def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="web processes")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the HTTP API (uvicorn) on the registry's active versions."""
    import uvicorn

    uvicorn.run("api.main:create_app", factory=True, host=host, port=port,
                workers=workers, log_level=log_level)
