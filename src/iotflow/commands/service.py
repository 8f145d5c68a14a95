"""Command logic: creation, delivery over the MQTT transport, forward-only status changes, expiry.

A new command is stored ``pending``. If the device is connected to MQTT it is published at once on
``iotflow/devices/{id}/commands/{command_type}`` (QoS 1, not retained) and marked ``delivered`` once the
transport accepted it; otherwise it waits until :meth:`CommandService.deliver_pending` runs (the MQTT
side calls it when the device connects) or the device polls ``GET /devices/{id}/control/pending``.
Polling marks nothing: the device reports progress with ``POST .../control/{cid}/status`` or MQTT
``commands/ack``.

Status moves forward only: pending → delivered → acknowledged → completed|failed (jumps forward are
allowed). ``expired`` is set only by IoTFlow: a pending or delivered command past ``expires_at`` is
reported as expired at once and written as expired by a background task every few seconds.

``created_by`` records who created a command: ``user:<32-hex user id>`` for a user's token (also an
administrator user), ``admin`` for the admin token, ``device:<id>`` for a device's API key.

A command published while the device (re)connects may be published twice; devices recognise a repeat
by its ``command_id``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
from typing import Any

import msgspec

from iotflow.auth.principal import Principal
from iotflow.background import Periodic
from iotflow.commands.repository import CommandRepository
from iotflow.commands.schemas import (
    MAX_ID,
    NewCommand,
    ack_fields,
    command_topic,
    effective_status,
    fleet_topic,
    mqtt_payload,
    status_update,
    transition_error,
)
from iotflow.errors import NotFound
from iotflow.events.service import EventLog
from iotflow.mqtt.base import MqttTransport
from iotflow.storage.models import Command
from iotflow.timeutil import format_ts, now_ms
from iotflow.users.service import UserService

log = logging.getLogger(__name__)


class CommandService:
    def __init__(
        self,
        repo: CommandRepository,
        transport: MqttTransport,
        events: EventLog,
        users: UserService,
        *,
        expire_every_s: float = 2.0,
    ) -> None:
        self.repo = repo
        self._mqtt = transport
        self._events = events
        self._users = users
        self._expirer = Periodic("command expiry", expire_every_s, self._expire)
        # one publisher per device at a time, so a device receives its commands in order
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    # ----- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._expirer.start()

    async def stop(self) -> None:
        await self._expirer.stop()

    async def _expire(self) -> None:
        await self.expire_due()

    async def expire_due(self) -> int:
        """Write ``expired`` on every pending/delivered command past its expiry; returns how many."""
        now = now_ms()
        expired = await self.repo.expire(now)
        if expired:
            owners = await self.repo.device_owners({e.device_id for e in expired})
            for e in expired:
                details = {"command_id": e.id, "command": e.command, "command_type": e.command_type}
                self._events.record_nowait(
                    "command.expired",
                    device_id=e.device_id,
                    user_id=owners.get(e.device_id),
                    details=details,
                    ts_ms=now,
                )
        return len(expired)

    # ----- creation and delivery -------------------------------------------------------------------

    async def created_by(self, principal: Principal) -> str:
        if principal.kind == "device" and principal.device is not None:
            return f"device:{principal.device.id}"
        if principal.user_id is not None:
            user = await self._users.auth_of(principal.user_id)
            if user is not None:
                return f"user:{user.user_id}"
        return "admin"

    async def create(
        self, targets: Sequence[tuple[int, int | None]], req: NewCommand, *, by: str
    ) -> list[Command]:
        """Store one command per (device id, owner) target, then publish to the connected devices."""
        now = now_ms()
        rows = [
            Command(
                device_id=device_id,
                command=req.command,
                command_type=req.command_type,
                parameters=req.parameters,
                status="pending",
                result=None,
                created_by=by,
                created_at=now,
                updated_at=now,
                expires_at=now + req.expires_in * 1000,
            )
            for device_id, _ in targets
        ]
        await self.repo.add(rows)
        for c, (_, owner) in zip(rows, targets, strict=True):
            self._record("created", c, owner, by=by)
        out = []
        for c, (device_id, owner) in zip(rows, targets, strict=True):
            if self._mqtt.is_connected(device_id):
                async with self._lock(device_id):
                    c = await self._publish(c, owner, qos=req.qos)
            out.append(c)
        return out

    async def send_fleet(
        self, group_id: int, member_ids: Sequence[int], req: NewCommand, *, by: str
    ) -> list[Command]:
        """One command per member device, plus one message on the fleet topic."""
        owners = await self.repo.device_owners(member_ids)
        commands = await self.create(sorted(owners.items()), req, by=by)
        payload = {
            "group_id": group_id,
            "command": req.command,
            "command_type": req.command_type,
            "parameters": req.parameters,
            "device_count": len(commands),
            "timestamp": format_ts(now_ms()),
            "source": "iotflow",
        }
        await self._send(fleet_topic(group_id), msgspec.json.encode(payload), qos=req.qos)
        return commands

    async def deliver_pending(self, device_id: int) -> int:
        """Publish the device's pending, unexpired commands in order and mark them delivered (called by
        the MQTT side when the device connects or subscribes). Returns how many were published."""
        async with self._lock(device_id):
            pending = await self.repo.open_commands(device_id, now_ms(), statuses=("pending",))
            if not pending:
                return 0
            owner = (await self.repo.device_owners([device_id])).get(device_id)
            sent = 0
            for c in pending:
                if (await self._publish(c, owner, qos=1)).status == "pending":
                    break  # not accepted by the transport: keep the rest in order for next time
                sent += 1
            return sent

    def _lock(self, device_id: int) -> asyncio.Lock:
        lock = self._locks.get(device_id)
        if lock is None:
            lock = self._locks[device_id] = asyncio.Lock()
        return lock

    async def _publish(self, c: Command, owner: int | None, *, qos: int) -> Command:
        """Publish one command; mark it delivered when the transport took it (call under its lock)."""
        topic = command_topic(c.device_id, c.command_type)
        if not await self._send(topic, mqtt_payload(c, now_ms()), qos=qos):
            return c
        moved, ok = await self.repo.move(c.device_id, c.id, "delivered", now_ms(), set_result=False)
        if moved is None:
            return c  # the device was deleted meanwhile
        if ok:
            self._record("delivered", moved, owner)
        return moved

    async def _send(self, topic: str, payload: bytes, *, qos: int) -> bool:
        try:
            return await self._mqtt.publish(topic, payload, qos=qos, retain=False)
        except Exception as exc:  # a transport failure leaves the command pending; never fails a request
            log.warning("publishing on %s failed: %s", topic, exc)
            return False

    # ----- reads -----------------------------------------------------------------------------------

    async def pending(self, device_id: int, *, limit: int) -> list[Command]:
        """Pending and delivered commands that have not expired, oldest first."""
        return await self.repo.open_commands(device_id, now_ms(), limit=limit)

    async def history(
        self, device_id: int, statuses: Sequence[str], *, limit: int, offset: int
    ) -> tuple[list[Command], int]:
        return await self.repo.find(device_id, statuses, now_ms(), limit=limit, offset=offset)

    # ----- status changes --------------------------------------------------------------------------

    async def set_status(
        self, device_id: int, owner: int | None, command_id: int, body: dict[str, Any]
    ) -> Command:
        """``{status, result?}`` from HTTP: forward only, else 400 naming the states."""
        status, result, set_result = status_update(body)
        return await self._move(device_id, owner, command_id, status, result, set_result)

    async def handle_ack(self, device_id: int, payload: dict[str, Any]) -> Command:
        """An MQTT ``commands/ack`` payload ``{command_id, status, result?}``. Same rule as HTTP; raises
        ValidationFailed/BadRequest (400) or NotFound (404). A repeat of the current status is a
        duplicate QoS 1 delivery and is accepted without change."""
        command_id, status, result, set_result = ack_fields(payload)
        owners = await self.repo.device_owners([device_id])
        if device_id not in owners:
            raise NotFound(f"Device {device_id} not found", title="Device not found")
        current = await self.repo.get(device_id, command_id)
        if current is not None and current.status == status:
            return current
        return await self._move(device_id, owners[device_id], command_id, status, result, set_result)

    async def _move(
        self, device_id: int, owner: int | None, command_id: int, status: str, result: Any, set_result: bool
    ) -> Command:
        c: Command | None = None
        moved = False
        if 0 < command_id <= MAX_ID:
            c, moved = await self.repo.move(
                device_id, command_id, status, now_ms(), result=result, set_result=set_result
            )
        if c is None:
            raise NotFound(f"Command {command_id} of device {device_id} not found", title="Command not found")
        if not moved:
            raise transition_error(command_id, effective_status(c, now_ms()), status)
        self._record(status, c, owner)
        return c

    def _record(self, what: str, c: Command, owner: int | None, **extra: Any) -> None:
        details = {"command_id": c.id, "command": c.command, "command_type": c.command_type, **extra}
        self._events.record_nowait(f"command.{what}", device_id=c.device_id, user_id=owner, details=details)
