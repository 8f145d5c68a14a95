"""Alert logic: rule management, evaluation in the ingest fan-out, alert state changes.

Flow: the pipeline calls :meth:`AlertService.on_points` after each committed batch. The engine
decides synchronously (in memory) which alerts open or resolve; the resulting changes go to an
ordered outbox that one drainer at a time writes to the database, then records as events
(``alert.opened`` / ``alert.resolved``) and publishes on the stream. Writes are rare, so the listener
simply awaits them.

The enabled rules are reloaded after every rule change and every ``reload_every_s`` seconds (which is
how group membership changes made elsewhere reach the index). Unresolved alerts are loaded at start,
so they survive a restart; a pending ``for_seconds`` clock does not (it starts again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

from iotflow.alerts.engine import AlertEngine, Change, CompiledRule
from iotflow.alerts.repository import AlertFilter, AlertRepository
from iotflow.alerts.schemas import AlertRecord, rule_body, rule_fields
from iotflow.alerts.stream import AlertHub
from iotflow.auth.principal import Principal
from iotflow.background import Periodic, finish
from iotflow.errors import Conflict, Forbidden, NotFound, ValidationFailed
from iotflow.events.service import EventLog
from iotflow.storage.models import AlertRule
from iotflow.storage.timeseries.base import Point
from iotflow.timeutil import now_ms

log = logging.getLogger(__name__)

MAX_OUTBOX = 100_000


class AlertService:
    def __init__(
        self,
        repo: AlertRepository,
        events: EventLog,
        *,
        reload_every_s: float = 15.0,
        ping_s: float = 15.0,
        subscriber_queue: int = 256,
    ) -> None:
        self.repo = repo
        self._events = events
        self.engine = AlertEngine()
        self.hub = AlertHub(max_queue=subscriber_queue, ping_s=ping_s)
        self._reload_every = reload_every_s
        self._outbox: deque[Change] = deque()
        self._draining = False
        self._wake = asyncio.Event()
        self._stopping = False
        self._reload_lock = asyncio.Lock()  # the last reload to read the rules is the last to install
        self._eval_lock = asyncio.Lock()  # batches are judged in commit order, owner look-ups included
        self._tasks: list[asyncio.Task[None]] = []
        self._reloader = Periodic("alert rule reload", self._reload_every, self.reload)
        self.dropped_changes = 0

    # ----- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self.engine.load_open(await self.repo.unresolved_alerts())
        await self.reload()
        self._stopping = False
        self._tasks = [asyncio.create_task(self._sweeper(), name="iotflow-alert-sweeper")]
        self._reloader.start()

    async def stop(self) -> None:
        await self._reloader.stop()
        self._stopping = True
        self._wake.set()
        await finish(self._tasks)  # a sweep in progress writes its alerts first
        self._tasks = []
        self.hub.close()
        await self._drain()

    async def reload(self) -> None:
        """Rebuild the in-memory rule index from the enabled rules in the database."""
        async with self._reload_lock:
            rules = await self.repo.enabled_rules()
            groups = {r.group_id for r in rules if r.group_id is not None and r.device_id is None}
            members = await self.repo.group_members(groups) if groups else {}
            compiled = [CompiledRule.of(r, members.get(r.group_id or 0)) for r in rules]
            changes = self.engine.install(compiled, now_ms())
        await self._submit(changes)

    async def _sweeper(self) -> None:
        """Opens ``for_seconds`` alerts when their time is up, also without a further reading."""
        while True:
            due = self.engine.next_due()
            self._wake.clear()
            timeout = None if due is None else max(0.0, (due - now_ms()) / 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            if self._stopping:
                return
            try:
                await self._submit(self.engine.sweep(now_ms()))
            except Exception as exc:
                log.warning("alert sweep failed: %s", exc)

    # ----- evaluation ------------------------------------------------------------------------------

    async def on_points(self, points: Sequence[Point]) -> None:
        """The ingest pipeline's listener: evaluate a committed batch."""
        if not self.engine.rule_count:
            return
        async with self._eval_lock:
            now = now_ms()
            changes, deferred = self.engine.evaluate(points, now)
            for _ in range(2):
                if not deferred:
                    break
                asked = {p.device_id for p in deferred}
                self.engine.learn_owners(await self.repo.device_owners(asked), asked)
                more, deferred = self.engine.evaluate(deferred, now)
                changes += more
        if self.engine.new_pending:
            self.engine.new_pending = False
            self._wake.set()
        await self._submit(changes)

    async def _submit(self, changes: list[Change]) -> None:
        if not changes:
            return
        if len(self._outbox) + len(changes) > MAX_OUTBOX:
            self.dropped_changes += len(changes)
            log.error("alert outbox full: %d alert changes not written", len(changes))
            for change in changes:
                self.engine.forget(change.record)
            return
        self._outbox.extend(changes)
        await self._drain()

    async def _drain(self) -> None:
        """Write queued changes in order; only one drainer runs at a time (others just queue)."""
        if self._draining:
            return
        self._draining = True
        try:
            while self._outbox:
                change = self._outbox.popleft()
                try:
                    await self._write(change)
                except Exception as exc:
                    log.error("writing an alert change failed: %s", exc, exc_info=exc)
                    if change.kind == "opened":
                        self.engine.forget(change.record)
        finally:
            self._draining = False

    async def _write(self, change: Change) -> None:
        snap, rec = change.snapshot, change.record
        if change.rule is not None and change.rule.deleted:
            return
        if change.kind == "opened":
            if not change.owner_known:
                _, owner = await self.repo.device_owner(snap.device_id)
                snap.user_id = rec.user_id = owner
            rec.id = snap.id = await self.repo.insert_alert(snap)
        else:
            if rec.id is None:  # its opening was never written
                return
            snap.id, snap.user_id = rec.id, rec.user_id
            moved = await self.repo.set_state(
                rec.id,
                "resolved",
                from_states=("open", "acknowledged"),
                values={"resolved_at": snap.resolved_at},
            )
            if not moved:  # resolved by hand in the meantime
                return
        details: dict[str, Any] = {
            "alert_id": snap.id,
            "rule_id": snap.rule_id,
            "key": snap.key,
            "value": snap.value,
            "operator": snap.operator,
            "threshold": snap.threshold,
            "severity": snap.severity,
            "message": snap.message,
        }
        if change.kind == "resolved":
            details["reason"] = change.reason
            if change.value is not None:
                details["resolved_value"] = change.value
        self._publish(change.kind, snap, details)

    def _publish(self, change: str, alert: AlertRecord, details: dict[str, Any]) -> None:
        self._events.record_nowait(
            f"alert.{change}", device_id=alert.device_id, user_id=alert.user_id, details=details
        )
        self.hub.publish(change, alert)

    # ----- rules -----------------------------------------------------------------------------------

    async def _check_scope(self, principal: Principal, fields: dict[str, Any]) -> None:
        """400 unless the caller may watch the rule's device or group (admin: it must exist)."""
        for name, lookup in (("device_id", self.repo.device_owner), ("group_id", self.repo.group_owner)):
            target = fields[name]
            if target is None:
                continue
            exists, owner = await lookup(target)
            what = "device" if name == "device_id" else "group"
            if principal.is_admin:
                if not exists:
                    raise ValidationFailed(name, f"There is no {what} with id {target}")
            elif not exists or owner is None or owner != principal.user_id:
                raise ValidationFailed(name, f"{name} {target} is not one of your {what}s")

    async def create_rule(self, principal: Principal, body: dict[str, Any]) -> AlertRule:
        fields = rule_fields(body)
        await self._check_scope(principal, fields)
        now = now_ms()
        rule = AlertRule(**fields, user_id=principal.user_id, created_at=now, updated_at=now)
        await self.repo.add_rule(rule)
        await self.reload()
        return rule

    async def rule_for(self, principal: Principal, rule_id: int) -> AlertRule:
        rule = await self.repo.get_rule(rule_id) if 0 < rule_id < 2**63 else None
        if rule is None:
            raise NotFound(f"Alert rule {rule_id} not found", title="Alert rule not found")
        if not principal.is_admin and (rule.user_id is None or rule.user_id != principal.user_id):
            raise Forbidden("This alert rule belongs to someone else")
        return rule

    async def list_rules(
        self, principal: Principal, *, device_id: int | None, limit: int, offset: int
    ) -> tuple[list[AlertRule], int]:
        user_id = None if principal.is_admin else principal.user_id
        return await self.repo.find_rules(user_id=user_id, device_id=device_id, limit=limit, offset=offset)

    async def update_rule(self, principal: Principal, rule_id: int, body: dict[str, Any]) -> AlertRule:
        """Fields not in ``body`` keep their values. Changing what fires (key, operator, threshold,
        for_seconds, device or group) or disabling the rule resolves its open alerts."""
        rule = await self.rule_for(principal, rule_id)
        fields = rule_fields({**rule_body(rule), **body})
        await self._check_scope(principal, fields)
        updated = await self.repo.update_rule(rule_id, {**fields, "updated_at": now_ms()})
        if updated is None:
            raise NotFound(f"Alert rule {rule_id} not found", title="Alert rule not found")
        await self.reload()
        return updated

    async def delete_rule(self, principal: Principal, rule_id: int) -> None:
        """Delete the rule and its alerts (open ones vanish without a ``resolved`` change)."""
        await self.rule_for(principal, rule_id)
        self.engine.remove_rules((rule_id,))
        await self.repo.delete_rule(rule_id)
        await self.reload()

    async def forget_device(self, device_id: int) -> None:
        """Called when a device is deleted: drop its alerts, its own rules and its in-memory state."""
        async with self._eval_lock:
            self.engine.forget_device(device_id)
            await self.repo.delete_for_device(device_id)
        await self.reload()

    async def forget_user(self, user_pk: int) -> None:
        """Called when a user is deleted: their rules and alerts go too (their devices went first)."""
        async with self._eval_lock:
            self.engine.remove_rules(await self.repo.delete_for_user(user_pk))
        await self.reload()

    # ----- alerts ----------------------------------------------------------------------------------

    async def list_alerts(
        self,
        principal: Principal,
        *,
        states: Sequence[str],
        severities: Sequence[str],
        device_id: int | None,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
        offset: int,
    ) -> tuple[list[AlertRecord], int]:
        """Alerts newest first: a user's are those on their devices; an admin sees all."""
        f = AlertFilter(
            user_id=None if principal.is_admin else (principal.user_id or 0),
            states=tuple(states),
            severities=tuple(severities),
            device_id=device_id,
            start_ms=start_ms,
            end_ms=end_ms,
        )
        return await self.repo.find_alerts(f, limit=limit, offset=offset)

    async def _alert_for(self, principal: Principal, alert_id: int) -> AlertRecord:
        alert = await self.repo.get_alert(alert_id) if 0 < alert_id < 2**63 else None
        if alert is None:
            raise NotFound(f"Alert {alert_id} not found", title="Alert not found")
        if not principal.is_admin and (alert.user_id is None or alert.user_id != principal.user_id):
            raise Forbidden("This alert is on a device you do not own")
        return alert

    async def acknowledge(self, principal: Principal, alert_id: int) -> AlertRecord:
        """open → acknowledged (409 when it is already acknowledged or resolved)."""
        alert = await self._alert_for(principal, alert_id)
        now = now_ms()
        if alert.state != "open" or not await self.repo.set_state(
            alert_id, "acknowledged", from_states=("open",), values={"acknowledged_at": now}
        ):
            raise _state_conflict(alert_id, (await self.repo.get_alert(alert_id)) or alert)
        alert.state, alert.acknowledged_at = "acknowledged", now
        live = self.engine.live(alert_id, alert.rule_id, alert.device_id)
        if live is not None:
            live.state, live.acknowledged_at = "acknowledged", now
        self._publish(
            "acknowledged", alert, {"alert_id": alert_id, "rule_id": alert.rule_id, "by": _who(principal)}
        )
        return alert

    async def resolve(self, principal: Principal, alert_id: int) -> AlertRecord:
        """open/acknowledged → resolved (409 when already resolved). While the condition still holds,
        the next matching reading opens a new alert."""
        alert = await self._alert_for(principal, alert_id)
        now = now_ms()
        if alert.state == "resolved" or not await self.repo.set_state(
            alert_id, "resolved", from_states=("open", "acknowledged"), values={"resolved_at": now}
        ):
            raise _state_conflict(alert_id, (await self.repo.get_alert(alert_id)) or alert)
        alert.state, alert.resolved_at = "resolved", now
        live = self.engine.live(alert_id, alert.rule_id, alert.device_id)
        if live is not None:
            live.state, live.resolved_at = "resolved", now
            self.engine.forget(live)
        details = {"alert_id": alert_id, "rule_id": alert.rule_id, "reason": "manual", "by": _who(principal)}
        self._publish("resolved", alert, details)
        return alert

    def stream(self, principal: Principal) -> AsyncIterator[bytes]:
        return self.hub.stream(user_id=principal.user_id, see_all=principal.is_admin)

    def stats(self) -> dict[str, int]:
        return {
            "rules": self.engine.rule_count,
            "unresolved": len(self.engine.open),
            "pending": len(self.engine.pending),
            "subscribers": self.hub.subscriber_count,
            "subscribers_dropped": self.hub.dropped,
            "changes_dropped": self.dropped_changes,
        }


def _who(principal: Principal) -> dict[str, Any]:
    return {"kind": principal.kind, "user_id": principal.user_id}


def _state_conflict(alert_id: int, alert: AlertRecord) -> Conflict:
    return Conflict(f"Alert {alert_id} is already {alert.state}", title=f"Alert already {alert.state}")
