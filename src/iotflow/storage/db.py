"""The metadata database: async SQLAlchemy engine, sessions and Alembic migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession
from sqlalchemy.pool import ConnectionPoolEntry

from iotflow.errors import ConfigError

MIGRATIONS = Path(__file__).with_name("migrations")


def async_url(url: str) -> str:
    """Map a user-facing URL to the SQLAlchemy async driver URL."""
    if url.startswith(("sqlite:", "sqlite+aiosqlite:")):
        return "sqlite+aiosqlite:" + url.split(":", 1)[1]
    if url.startswith(("postgresql:", "postgres:", "postgresql+asyncpg:")):
        return "postgresql+asyncpg:" + url.split(":", 1)[1]
    raise ConfigError(
        f"IOTFLOW_DATABASE_URL: unsupported database URL scheme in {url.split(':', 1)[0]!r} "
        "(use sqlite:///path.db or postgresql://user@host/db)"
    )


def dialect_of(url: str) -> Literal["sqlite", "postgresql"]:
    return "sqlite" if async_url(url).startswith("sqlite") else "postgresql"


def _sqlite_pragmas(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def create_engine(url: str) -> AsyncEngine:
    aurl = async_url(url)
    if aurl.startswith("sqlite"):
        engine = create_async_engine(aurl, pool_size=4, max_overflow=4)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(aurl, pool_size=10, max_overflow=10, pool_pre_ping=True)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


async def migrate(engine: AsyncEngine, action: Literal["upgrade", "downgrade"], revision: str) -> None:
    def run(connection: Connection) -> None:
        cfg = _alembic_config(connection)
        if action == "upgrade":
            command.upgrade(cfg, revision)
        else:
            command.downgrade(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def current_revision(engine: AsyncEngine) -> str | None:
    def run(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(run)
