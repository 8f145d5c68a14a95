"""The event log: device/user/telemetry/alert events, written in batches off the hot path.

:meth:`EventLog.record` only appends to an in-memory buffer; a background task writes the buffer in
one transaction every half second (and at shutdown), so logging an event never slows ingest.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from iotflow.background import Periodic
from iotflow.storage.models import Device, Event
from iotflow.timeutil import format_ts, now_ms

log = logging.getLogger(__name__)

MAX_BUFFER = 100_000


class EventLog:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, flush_every_s: float = 0.5) -> None:
        self._sessions = sessions
        self._buffer: list[dict[str, Any]] = []
        self._periodic = Periodic("event log flush", flush_every_s, self.flush)
        self.dropped = 0

    async def record(
        self,
        type_: str,
        *,
        device_id: int | None = None,
        user_id: int | None = None,
        details: dict[str, Any] | None = None,
        ts_ms: int | None = None,
    ) -> None:
        self.record_nowait(type_, device_id=device_id, user_id=user_id, details=details, ts_ms=ts_ms)

    def record_nowait(
        self,
        type_: str,
        *,
        device_id: int | None = None,
        user_id: int | None = None,
        details: dict[str, Any] | None = None,
        ts_ms: int | None = None,
    ) -> None:
        if len(self._buffer) >= MAX_BUFFER:
            self.dropped += 1  # bounded: the log never holds up the platform
            return
        self._buffer.append(
            {
                "type": type_,
                "device_id": device_id,
                "user_id": user_id,
                "ts": now_ms() if ts_ms is None else ts_ms,
                "details": details or {},
            }
        )

    async def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
        await self.flush()

    async def flush(self) -> None:
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        try:
            async with self._sessions() as s, s.begin():
                await s.execute(insert(Event), rows)
        except Exception:
            self._buffer[:0] = rows
            raise

    async def query(
        self,
        *,
        user_id: int | None,
        types: Sequence[str] | None,
        device_id: int | None,
        start_ms: int,
        end_ms: int,
        limit: int,
        offset: int,
    ) -> tuple[list[dict[str, Any]], int]:
        """Events newest first. ``user_id`` set: only events of that user or of devices they own."""
        await self.flush()
        stmt = select(Event).where(Event.ts >= start_ms, Event.ts <= end_ms)
        if user_id is not None:
            owned = select(Device.id).where(Device.user_id == user_id)
            stmt = stmt.where(or_(Event.user_id == user_id, Event.device_id.in_(owned)))
        if types:
            stmt = stmt.where(
                or_(
                    *[
                        Event.type == t if not t.endswith("*") else Event.type.startswith(t[:-1])
                        for t in types
                    ]
                )
            )
        if device_id is not None:
            stmt = stmt.where(Event.device_id == device_id)
        async with self._sessions() as s:
            total = (await s.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
            rows = await s.execute(
                stmt.order_by(Event.ts.desc(), Event.id.desc()).limit(limit).offset(offset)
            )
            events = [
                {
                    "id": e.id,
                    "type": e.type,
                    "device_id": e.device_id,
                    "user_id": e.user_id,
                    "timestamp": format_ts(e.ts),
                    "details": e.details,
                }
                for e in rows.scalars().all()
            ]
        return events, int(total)
