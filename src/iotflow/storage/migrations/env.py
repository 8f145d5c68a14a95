"""Alembic environment: IoTFlow always hands it an open connection (see ``iotflow.storage.db``)."""

from __future__ import annotations

from alembic import context

from iotflow.storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reached when alembic is run by hand without IoTFlow
    raise RuntimeError("Run migrations with `iotflow db upgrade`, which provides the connection.")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
