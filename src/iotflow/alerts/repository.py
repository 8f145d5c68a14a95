"""Every query on alert rules and alerts (and the read-only lookups they need: devices, groups)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from iotflow.alerts.schemas import AlertRecord
from iotflow.storage.models import Alert, AlertRule, Device, Group, GroupMember

_CHUNK = 500  # ids per IN (...) list


@dataclass(frozen=True, slots=True)
class AlertFilter:
    user_id: int | None  # None: every alert (admin)
    states: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    device_id: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None


_ALERT_FIELDS = tuple(f.name for f in fields(AlertRecord))


def _record(a: Alert) -> AlertRecord:
    return AlertRecord(**{name: getattr(a, name) for name in _ALERT_FIELDS})


def _filtered(stmt: Select[Any], f: AlertFilter) -> Select[Any]:
    if f.user_id is not None:
        stmt = stmt.where(Alert.user_id == f.user_id)
    if f.states:
        stmt = stmt.where(Alert.state.in_(f.states))
    if f.severities:
        stmt = stmt.where(Alert.severity.in_(f.severities))
    if f.device_id is not None:
        stmt = stmt.where(Alert.device_id == f.device_id)
    if f.start_ms is not None:
        stmt = stmt.where(Alert.opened_at >= f.start_ms)
    if f.end_ms is not None:
        stmt = stmt.where(Alert.opened_at <= f.end_ms)
    return stmt


class AlertRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    # ----- rules -----------------------------------------------------------------------------------

    async def add_rule(self, rule: AlertRule) -> AlertRule:
        async with self._sessions() as s, s.begin():
            s.add(rule)
        return rule

    async def get_rule(self, rule_id: int) -> AlertRule | None:
        async with self._sessions() as s:
            return await s.get(AlertRule, rule_id)

    async def find_rules(
        self, *, user_id: int | None, device_id: int | None, limit: int, offset: int
    ) -> tuple[list[AlertRule], int]:
        """Rules of ``user_id`` (every rule when None), by id."""
        stmt = select(AlertRule)
        if user_id is not None:
            stmt = stmt.where(AlertRule.user_id == user_id)
        if device_id is not None:
            stmt = stmt.where(AlertRule.device_id == device_id)
        async with self._sessions() as s:
            total = (await s.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
            rows = await s.execute(stmt.order_by(AlertRule.id).limit(limit).offset(offset))
            return list(rows.scalars().all()), int(total)

    async def update_rule(self, rule_id: int, values: Mapping[str, Any]) -> AlertRule | None:
        async with self._sessions() as s, s.begin():
            rule = await s.get(AlertRule, rule_id)
            if rule is None:
                return None
            for name, value in values.items():
                setattr(rule, name, value)
        return rule

    async def delete_rule(self, rule_id: int) -> None:
        """Delete the rule and its alerts."""
        async with self._sessions() as s, s.begin():
            await s.execute(delete(Alert).where(Alert.rule_id == rule_id))
            await s.execute(delete(AlertRule).where(AlertRule.id == rule_id))

    async def delete_for_device(self, device_id: int) -> None:
        """A device is gone: its alerts and the rules that watched only it go with it."""
        async with self._sessions() as s, s.begin():
            rules = select(AlertRule.id).where(AlertRule.device_id == device_id)
            await s.execute(delete(Alert).where((Alert.device_id == device_id) | Alert.rule_id.in_(rules)))
            await s.execute(delete(AlertRule).where(AlertRule.device_id == device_id))

    async def delete_for_user(self, user_pk: int) -> list[int]:
        """A user is gone: their rules with their alerts, and the alerts shown to them. The rule ids."""
        async with self._sessions() as s, s.begin():
            ids = list((await s.execute(select(AlertRule.id).where(AlertRule.user_id == user_pk))).scalars())
            await s.execute(delete(Alert).where((Alert.user_id == user_pk) | Alert.rule_id.in_(ids)))
            await s.execute(delete(AlertRule).where(AlertRule.user_id == user_pk))
            return ids

    async def enabled_rules(self) -> list[AlertRule]:
        async with self._sessions() as s:
            rows = await s.execute(select(AlertRule).where(AlertRule.enabled.is_(True)))
            return list(rows.scalars().all())

    # ----- devices and groups (read-only) ----------------------------------------------------------

    async def device_owner(self, device_id: int) -> tuple[bool, int | None]:
        """(exists, owner's user id) of a device."""
        async with self._sessions() as s:
            row = (await s.execute(select(Device.id, Device.user_id).where(Device.id == device_id))).first()
            return (False, None) if row is None else (True, row[1])

    async def device_owners(self, device_ids: Collection[int]) -> dict[int, int | None]:
        """Owner of each device that exists (devices that do not are missing from the answer)."""
        ids = sorted(device_ids)
        out: dict[int, int | None] = {}
        async with self._sessions() as s:
            for i in range(0, len(ids), _CHUNK):
                stmt = select(Device.id, Device.user_id).where(Device.id.in_(ids[i : i + _CHUNK]))
                out.update({row[0]: row[1] for row in (await s.execute(stmt)).all()})
        return out

    async def group_owner(self, group_id: int) -> tuple[bool, int | None]:
        async with self._sessions() as s:
            row = (await s.execute(select(Group.id, Group.user_id).where(Group.id == group_id))).first()
            return (False, None) if row is None else (True, row[1])

    async def group_members(self, group_ids: Collection[int]) -> dict[int, set[int]]:
        ids = sorted(group_ids)
        out: dict[int, set[int]] = {g: set() for g in ids}
        async with self._sessions() as s:
            for i in range(0, len(ids), _CHUNK):
                stmt = select(GroupMember.group_id, GroupMember.device_id).where(
                    GroupMember.group_id.in_(ids[i : i + _CHUNK])
                )
                for group_id, device_id in (await s.execute(stmt)).all():
                    out[group_id].add(device_id)
        return out

    # ----- alerts ----------------------------------------------------------------------------------

    async def insert_alert(self, a: AlertRecord) -> int:
        row = Alert(**{name: getattr(a, name) for name in _ALERT_FIELDS if name != "id"})
        async with self._sessions() as s, s.begin():
            s.add(row)
        return row.id

    async def set_state(
        self, alert_id: int, state: str, *, from_states: Collection[str], values: Mapping[str, Any]
    ) -> bool:
        """Move an alert to ``state`` if it is in one of ``from_states``; False when it was not."""
        stmt = (
            update(Alert)
            .where(Alert.id == alert_id, Alert.state.in_(list(from_states)))
            .values(state=state, **values)
        )
        async with self._sessions() as s, s.begin():
            result = await s.execute(stmt)
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def get_alert(self, alert_id: int) -> AlertRecord | None:
        async with self._sessions() as s:
            a = await s.get(Alert, alert_id)
            return None if a is None else _record(a)

    async def unresolved_alerts(self) -> list[AlertRecord]:
        async with self._sessions() as s:
            rows = await s.execute(select(Alert).where(Alert.state.in_(("open", "acknowledged"))))
            return [_record(a) for a in rows.scalars().all()]

    async def find_alerts(self, f: AlertFilter, *, limit: int, offset: int) -> tuple[list[AlertRecord], int]:
        """Alerts newest first."""
        stmt = _filtered(select(Alert), f)
        async with self._sessions() as s:
            total = (await s.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
            rows = await s.execute(
                stmt.order_by(Alert.opened_at.desc(), Alert.id.desc()).limit(limit).offset(offset)
            )
            return [_record(a) for a in rows.scalars().all()], int(total)
