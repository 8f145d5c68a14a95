"""Initial schema: devices, device configuration, events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("device_type", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("location", sa.Text),
        sa.Column("firmware_version", sa.String(100)),
        sa.Column("hardware_version", sa.String(100)),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("reported", sa.JSON, nullable=False),
        sa.Column("latitude", sa.Float),
        sa.Column("longitude", sa.Float),
        sa.Column("user_id", sa.Integer),
        sa.Column("owner_scope", sa.Integer, nullable=False),
        sa.Column("api_key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("last_seen", sa.BigInteger),
        sa.UniqueConstraint("owner_scope", "name", name="uq_devices_owner_name"),
        sa.UniqueConstraint("api_key_hash", name="uq_devices_api_key_hash"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_devices_user_id", "devices", ["user_id"])
    op.create_table(
        "device_configurations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.Integer, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("config_key", sa.String(128), nullable=False),
        sa.Column("config_value", sa.Text, nullable=False),
        sa.Column("data_type", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("device_id", "config_key", name="uq_device_config_key"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("device_id", sa.Integer),
        sa.Column("user_id", sa.Integer),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_device_ts", "events", ["device_id", "ts"])
    op.create_index("ix_events_ts", "events", ["ts"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("device_configurations")
    op.drop_index("ix_devices_user_id", table_name="devices")
    op.drop_table("devices")
