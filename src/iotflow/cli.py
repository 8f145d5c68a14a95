"""The ``iotflow`` command line: serve, db, devices, users, config, bench."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer

from iotflow import __version__
from iotflow.config import Settings, describe, load_settings, prepare_data_dir
from iotflow.errors import ConfigError, IoTFlowError

T = TypeVar("T")

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="IoTFlow: self-hosted IoT device platform."
)
db_app = typer.Typer(no_args_is_help=True, help="Database migrations.")
devices_app = typer.Typer(no_args_is_help=True, help="Manage devices.")
users_app = typer.Typer(no_args_is_help=True, help="Manage users.")
app.add_typer(db_app, name="db")
app.add_typer(devices_app, name="devices")
app.add_typer(users_app, name="users")


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings(**overrides: Any) -> tuple[Settings, str | None]:
    try:
        return prepare_data_dir(load_settings(**overrides))
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable


def _run(func: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    """Run one command's coroutine; a setting or a refused operation ends in one line on stderr."""
    settings, _ = _settings()
    try:
        return asyncio.run(func(settings))
    except ConfigError as exc:
        _fail(str(exc))
        raise
    except IoTFlowError as exc:
        _fail(f"{exc.title}: {exc.message}")
        raise


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def config() -> None:
    """Print the effective settings (secrets masked)."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        _fail(str(exc))
        return
    for name, value in describe(settings).items():
        typer.echo(f"{name}={'' if value is None else value}")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def bench(
    ctx: typer.Context,
    source: Annotated[
        str | None,
        typer.Option(help="The IoTFlow source checkout holding benchmarks/ (default: the current directory)"),
    ] = None,
) -> None:
    """Run the benchmarks (needs a source checkout): `iotflow bench [--quick] [--duration S]`.

    Prints one JSON object on stdout, progress on stderr; the same as `make bench`."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(source or ".").resolve()
    if not (root / "benchmarks" / "run.py").is_file():
        _fail(
            f"no benchmarks/ folder in {root}: run `iotflow bench` from the root of an IoTFlow "
            "source checkout (or pass --source PATH)"
        )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    code = subprocess.call([sys.executable, "-m", "benchmarks.run", *ctx.args], cwd=root, env=env)
    raise typer.Exit(code)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (IOTFLOW_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (IOTFLOW_PORT)")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (IOTFLOW_WORKERS)")] = None,
) -> None:
    """Run the server (applies database migrations first)."""
    import uvicorn

    from iotflow.app import create_app, fast_paths
    from iotflow.httpserver import uvicorn_options

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if workers is not None:
        overrides["workers"] = workers
    settings, new_admin_token = _settings(**overrides)
    if settings.workers > 1:
        _fail(
            "IOTFLOW_WORKERS > 1 needs PostgreSQL, Redis and an external MQTT broker, "
            "which this version does not support yet; use 1",
            2,
        )
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    base = f"http://{settings.host}:{settings.port}"
    typer.echo(f"IoTFlow {__version__}")
    typer.echo(f"  HTTP API   {base}/api/v1")
    typer.echo(f"  API docs   {base}/schema/swagger")
    typer.echo(f"  Health     {base}/health")
    typer.echo(f"  Data dir   {settings.data_dir.resolve()}")
    typer.echo(f"  MQTT       {_mqtt_line(settings)}")
    if new_admin_token:
        typer.echo("")
        typer.echo(f"  Admin token (shown once; kept in {settings.data_dir / 'admin_token'}):")
        typer.echo(f"    {new_admin_token}")
        typer.echo("  Use it as:  Authorization: admin <token>")
    sys.stdout.flush()
    startup = _StartupError()
    logging.getLogger("uvicorn.error").addFilter(startup)
    try:
        app = create_app(settings)
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            **uvicorn_options(app if fast_paths(settings) else None),
            # Open streams (SSE) never end by themselves: give them 3 s, then close them so that
            # the lifespan still runs and flushes every buffer.
            timeout_graceful_shutdown=3,
        )
    except ConfigError as exc:
        _fail(str(exc))
    except SystemExit:
        if startup.message:  # uvicorn exits with 3 after a failed start-up
            _fail(startup.message)
        raise


def _mqtt_line(settings: Settings) -> str:
    mode = settings.mqtt_mode
    if mode == "disabled":
        return "disabled (IOTFLOW_MQTT_ENABLED=false)"
    if mode == "external":
        from iotflow.config import describe_url

        return f"external broker {describe_url(settings.mqtt_broker_url or '')}"
    host = f"[{settings.mqtt_host}]" if ":" in settings.mqtt_host else settings.mqtt_host
    line = f"mqtt://{host}:{settings.mqtt_port}"
    if settings.mqtt_ws_port:
        line += f", ws://{host}:{settings.mqtt_ws_port}/mqtt"
    return line + " (embedded broker; username = device id, password = API key)"


class _StartupError(logging.Filter):
    """Catches a ConfigError raised while the app starts (in the lifespan, e.g. the MQTT port is taken).

    uvicorn would log it as a traceback and exit with 3; ``serve`` prints its message as one line and
    exits with 1 instead.
    """

    _pattern = re.compile(r"iotflow\.errors\.ConfigError: (.+)$", re.MULTILINE)

    def __init__(self) -> None:
        super().__init__()
        self.message: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        found = self._pattern.findall(text)
        if found:
            self.message = found[-1].strip()
            return False
        return not (self.message and "startup failed" in text)


# ----- db ---------------------------------------------------------------------------------------------


async def _with_engine(settings: Settings, action: Callable[[Any], Awaitable[T]]) -> T:
    from iotflow.storage import db

    engine = db.create_engine(settings.effective_database_url)
    try:
        return await action(engine)
    finally:
        await engine.dispose()


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    from iotflow.storage import db

    _run(lambda s: _with_engine(s, lambda e: db.migrate(e, "upgrade", revision)))
    typer.echo(f"database upgraded to {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument()]) -> None:
    """Revert migrations down to REVISION (e.g. 'base')."""
    from iotflow.storage import db

    _run(lambda s: _with_engine(s, lambda e: db.migrate(e, "downgrade", revision)))
    typer.echo(f"database downgraded to {revision}")


@db_app.command("current")
def db_current() -> None:
    """Print the current revision."""
    from iotflow.storage import db

    rev = _run(lambda s: _with_engine(s, db.current_revision))
    typer.echo(rev or "(empty database)")


# ----- devices ----------------------------------------------------------------------------------------


async def _with_runtime(settings: Settings, action: Callable[[Any], Awaitable[T]]) -> T:
    from iotflow.runtime import open_runtime

    # A one-shot command never runs the MQTT broker (the server holds its port), and writes and reads
    # telemetry in its own threads: helper processes would only add their start-up to the command.
    one_shot = {"mqtt_enabled": False, "write_process": False, "read_processes": 0}
    async with open_runtime(settings.model_copy(update=one_shot)) as rt:
        return await action(rt)


@devices_app.command("create")
def devices_create(
    name: str,
    device_type: Annotated[str, typer.Option("--type", help="Device type, e.g. sensor")],
    description: Annotated[str | None, typer.Option()] = None,
    location: Annotated[str | None, typer.Option()] = None,
    owner: Annotated[str | None, typer.Option(help="Owner's username or email")] = None,
) -> None:
    """Register a device and print its API key (shown only now)."""
    from iotflow.errors import NotFound

    body = {"name": name, "device_type": device_type, "description": description, "location": location}

    async def action(rt: Any) -> tuple[Any, str]:
        user_pk = None
        if owner is not None:
            user = await rt.users.repo.by_login(owner)
            if user is None:
                raise NotFound(f"No user {owner!r}", title="User not found")
            user_pk = user.id
        clean = {k: v for k, v in body.items() if v is not None}
        return await rt.devices.register(clean, user_id=user_pk)  # type: ignore[no-any-return]

    device, api_key = _run(lambda s: _with_runtime(s, action))
    typer.echo(f"device {device.id} {device.name!r} created")
    typer.echo(f"api key: {api_key}")


@devices_app.command("list")
def devices_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """List devices."""

    async def action(rt: Any) -> list[dict[str, Any]]:
        devices, _ = await rt.devices.repo.find({}, limit=1_000_000, offset=0)
        return [
            {
                "id": d.id,
                "name": d.name,
                "device_type": d.device_type,
                "status": d.status,
                "user_id": d.user_id,
            }
            for d in devices
        ]

    rows = _run(lambda s: _with_runtime(s, action))
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "name", "type", "status")
    for r in rows:
        table.add_row(str(r["id"]), r["name"], r["device_type"], r["status"])
    Console().print(table)


@devices_app.command("rotate-key")
def devices_rotate(device_id: int) -> None:
    """Issue a new API key for a device; the old key stops working (within 5 s on a running server)."""

    async def action(rt: Any) -> str:
        _, key = await rt.devices.rotate_key(device_id)
        return key  # type: ignore[no-any-return]

    key = _run(lambda s: _with_runtime(s, action))
    typer.echo(f"api key: {key}")


@devices_app.command("delete")
def devices_delete(
    device_id: int, yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask")] = False
) -> None:
    """Delete a device and all its telemetry."""
    if not yes and not typer.confirm(f"Delete device {device_id} and all its telemetry?"):
        raise typer.Exit(1)

    async def action(rt: Any) -> tuple[Any, int]:
        return await rt.devices.delete(device_id)  # type: ignore[no-any-return]

    device, points = _run(lambda s: _with_runtime(s, action))
    typer.echo(f"device {device_id} {device.name!r} deleted with {points} points")


# ----- users ------------------------------------------------------------------------------------------


@users_app.command("create")
def users_create(
    username: str,
    email: Annotated[str, typer.Option("--email", help="The user's email address")],
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an administrator")] = False,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin")
    ] = False,
) -> None:
    """Create a user (asks for the password unless --password-stdin)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)

    async def action(rt: Any) -> Any:
        return await rt.users.create(username, email, password, is_admin=admin)

    user = _run(lambda s: _with_runtime(s, action))
    kind = "admin user" if user.is_admin else "user"
    typer.echo(f"{kind} {user.username!r} created (id {user.id}, user_id {user.user_id})")


@users_app.command("list")
def users_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """List users."""

    async def action(rt: Any) -> list[dict[str, Any]]:
        users, _ = await rt.users.repo.find(limit=1_000_000, offset=0)
        return [
            {
                "id": u.id,
                "user_id": u.user_id,
                "username": u.username,
                "email": u.email,
                "is_active": u.is_active,
                "is_admin": u.is_admin,
            }
            for u in users
        ]

    rows = _run(lambda s: _with_runtime(s, action))
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "user_id", "username", "email", "active", "admin")
    for r in rows:
        table.add_row(
            str(r["id"]), r["user_id"], r["username"], r["email"], str(r["is_active"]), str(r["is_admin"])
        )
    Console().print(table)


def main() -> None:
    app()
