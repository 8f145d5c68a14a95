"""SQLAlchemy 2 models of the metadata database (devices, device configuration, events).

All timestamps are integer milliseconds since the Unix epoch (UTC): one representation for SQLite
and PostgreSQL, formatted as ISO-8601 ``Z`` only at the API edge.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("owner_scope", "name", name="uq_devices_owner_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    device_type: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="active")
    location: Mapped[str | None] = mapped_column(Text)
    firmware_version: Mapped[str | None] = mapped_column(String(100))
    hardware_version: Mapped[str | None] = mapped_column(String(100))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reported: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    user_id: Mapped[int | None] = mapped_column(Integer, index=True)
    # user_id or 0: device names are unique per owner, and among devices without an owner.
    owner_scope: Mapped[int] = mapped_column(Integer, default=0)
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    last_seen: Mapped[int | None] = mapped_column(BigInteger)


class DeviceConfiguration(Base):
    __tablename__ = "device_configurations"
    __table_args__ = (UniqueConstraint("device_id", "config_key", name="uq_device_config_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    config_key: Mapped[str] = mapped_column(String(128))
    config_value: Mapped[str] = mapped_column(Text)
    data_type: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[int] = mapped_column(BigInteger)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_device_ts", "device_id", "ts"),
        Index("ix_events_ts", "ts"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[int | None] = mapped_column(Integer)
    user_id: Mapped[int | None] = mapped_column(Integer)
    ts: Mapped[int] = mapped_column(BigInteger)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
