"""Rule evaluation: the enabled rules indexed in memory, and the state of every (rule, device) pair.

The engine is synchronous and does no I/O: :meth:`AlertEngine.evaluate` turns a committed batch of
points into :class:`Change` objects (alerts opened or resolved) that the service then writes, logs
and publishes. Cost when no rule watches a point's key: one dict lookup per point.

Semantics (``spec/api.md`` §7):

- Only numeric values (int or float, not bool) are compared; other values are ignored.
- Time is the *commit* time of a batch (when IoTFlow received the readings), never the readings'
  own timestamps: device clocks drift and batches carry old readings. All points of one committed
  batch count as observed at the same instant; within it, the reading with the latest timestamp is
  the "current" value of a (rule, device).
- ``for_seconds == 0``: an alert opens when the current value meets the condition. A reading that
  meets it while the current one does not (a spike inside one batch) still opens an alert, which is
  resolved at once: spikes are not lost, and there is at most one new alert per (rule, device) per batch.
- ``for_seconds > 0``: the condition must hold from one batch to the next for that long (any reading
  that fails restarts the clock). The alert opens when the time is up, also when no further reading
  arrives (the last value still holds), via :meth:`sweep`.
- An open or acknowledged alert resolves when the current value no longer meets the condition.
  At most one unresolved alert exists per (rule, device).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from iotflow.alerts.schemas import OPERATORS, AlertRecord, alert_message
from iotflow.storage.models import AlertRule
from iotflow.storage.timeseries.base import Point

StateKey = tuple[int, int]  # (rule id, device id)


@dataclass(slots=True, eq=False)
class CompiledRule:
    id: int
    name: str
    user_id: int | None  # owner; None = the admin token's rule (every device when unscoped)
    device_id: int | None
    group_id: int | None
    key: str
    operator: str
    threshold: float
    severity: str
    for_ms: int
    test: Callable[[Any, Any], bool]
    members: frozenset[int] | None  # the group's devices, for a group rule
    # Devices with an open alert or a pending condition for this rule: failing readings of these
    # devices matter, failing readings of any other device cost nothing.
    watch: set[int] = field(default_factory=set)
    deleted: bool = False  # set when the rule is deleted: its queued changes are not written

    @classmethod
    def of(cls, rule: AlertRule, members: Iterable[int] | None = None) -> CompiledRule:
        return cls(
            id=rule.id,
            name=rule.name,
            user_id=rule.user_id,
            device_id=rule.device_id,
            group_id=rule.group_id,
            key=rule.key,
            operator=rule.operator,
            threshold=float(rule.threshold),
            severity=rule.severity,
            for_ms=rule.for_seconds * 1000,
            test=OPERATORS[rule.operator],
            members=None if rule.group_id is None else frozenset(members or ()),
        )

    @property
    def signature(self) -> tuple[Any, ...]:
        """What decides which readings fire; a change of it resolves the rule's open alerts."""
        return (self.key, self.operator, self.threshold, self.for_ms, self.device_id, self.group_id)

    def covers(self, device_id: int) -> bool:
        """Whether the rule still applies to ``device_id`` (owners never change, so not checked)."""
        if self.device_id is not None:
            return self.device_id == device_id
        if self.members is not None:
            return device_id in self.members
        return True


@dataclass(slots=True)
class _KeyRules:
    by_device: dict[int, list[CompiledRule]] = field(default_factory=dict)  # device and group rules
    by_owner: dict[int, list[CompiledRule]] = field(default_factory=dict)  # a user's all-devices rules
    fleet: list[CompiledRule] = field(default_factory=list)  # admin token's all-devices rules
    resolved: dict[int, tuple[CompiledRule, ...]] = field(default_factory=dict)  # device -> its rules


@dataclass(slots=True)
class _Pending:
    rule: CompiledRule
    since: int
    value: float


class _Obs:
    """What one batch showed for one (rule, device)."""

    __slots__ = ("any_fail", "last_match", "last_ts", "last_value", "match_ts", "match_value")

    def __init__(self) -> None:
        self.last_ts = -(2**63)
        self.last_value: float = 0.0
        self.last_match = False
        self.match_ts = -(2**63)
        self.match_value: float | None = None
        self.any_fail = False

    def see(self, ts: int, value: float, match: bool) -> None:
        if ts >= self.last_ts:
            self.last_ts, self.last_value, self.last_match = ts, value, match
        if match:
            if ts >= self.match_ts:
                self.match_ts, self.match_value = ts, value
        else:
            self.any_fail = True


@dataclass(slots=True)
class Change:
    """An alert opened or resolved. ``record`` is the live alert (its id is set once written);
    ``snapshot`` is the alert as it was at this change."""

    kind: str  # "opened" | "resolved"
    record: AlertRecord
    snapshot: AlertRecord
    rule: CompiledRule | None = None
    owner_known: bool = True
    value: float | None = None  # the reading that resolved it
    reason: str = "condition"


class AlertEngine:
    def __init__(self) -> None:
        self._rules: dict[int, CompiledRule] = {}
        self._keys: dict[str, _KeyRules] = {}
        self._owners: dict[int, int | None] = {}
        self.open: dict[StateKey, AlertRecord] = {}
        self.pending: dict[StateKey, _Pending] = {}
        self.new_pending = False  # set when a pending condition started (the sweeper's wake-up)

    @property
    def rule_count(self) -> int:
        return len(self._rules)

    # ----- rules and state -------------------------------------------------------------------------

    def load_open(self, alerts: Iterable[AlertRecord]) -> None:
        """Unresolved alerts from the database (at start); the newest wins per (rule, device)."""
        for a in sorted(alerts, key=lambda a: (a.opened_at, a.id or 0)):
            self.open[(a.rule_id, a.device_id)] = a

    def forget_device(self, device_id: int) -> None:
        """Drop every open alert and pending condition of a deleted device (no changes published)."""
        for state in [k for k in self.open if k[1] == device_id]:
            del self.open[state]
        for state in [k for k in self.pending if k[1] == device_id]:
            del self.pending[state]
        self._owners.pop(device_id, None)

    def install(self, rules: Sequence[CompiledRule], now: int) -> list[Change]:
        """Replace the rule set. Open alerts of rules that were disabled, deleted, changed their
        condition or no longer cover the device are resolved; matching pending states carry over."""
        new = {r.id: r for r in rules}
        changes: list[Change] = []
        for rec in list(self.open.values()):
            rule = new.get(rec.rule_id)
            old = self._rules.get(rec.rule_id)
            if rule is None:
                self._resolve(rec, None, now, changes, "rule disabled or deleted")
            elif (old is not None and old.signature != rule.signature) or not rule.covers(rec.device_id):
                self._resolve(rec, None, now, changes, "rule changed")
        for key, pend in list(self.pending.items()):
            rule = new.get(key[0])
            if rule is None or rule.signature != pend.rule.signature or not rule.covers(key[1]):
                del self.pending[key]
            else:
                pend.rule = rule
        for rule_id, device_id in (*self.open, *self.pending):
            if (rule := new.get(rule_id)) is not None:
                rule.watch.add(device_id)
        index: dict[str, _KeyRules] = {}
        for r in rules:
            kr = index.setdefault(r.key, _KeyRules())
            if r.device_id is not None:
                kr.by_device.setdefault(r.device_id, []).append(r)
            elif r.members is not None:
                for device_id in r.members:
                    kr.by_device.setdefault(device_id, []).append(r)
            elif r.user_id is not None:
                kr.by_owner.setdefault(r.user_id, []).append(r)
            else:
                kr.fleet.append(r)
        self._rules, self._keys = new, index
        self._owners = {}
        return changes

    def remove_rules(self, rule_ids: Collection[int]) -> None:
        """Forget deleted rules and their state at once (their alerts are deleted with them)."""
        ids = set(rule_ids)
        rules = [r for r in self._rules.values() if r.id not in ids]
        for rule_id in ids:
            if (gone := self._rules.get(rule_id)) is not None:
                gone.deleted = True
        for key in [k for k in (*self.open, *self.pending) if k[0] in ids]:
            self.open.pop(key, None)
            self.pending.pop(key, None)
        self.install(rules, 0)

    def forget(self, alert: AlertRecord) -> None:
        """Drop a resolved (or never written) alert from the open state."""
        key = (alert.rule_id, alert.device_id)
        live = self.open.get(key)
        if live is alert or (live is not None and alert.id is not None and live.id == alert.id):
            del self.open[key]
            rule = self._rules.get(alert.rule_id)
            if rule is not None and key not in self.pending:
                rule.watch.discard(alert.device_id)

    def live(self, alert_id: int, rule_id: int, device_id: int) -> AlertRecord | None:
        rec = self.open.get((rule_id, device_id))
        return rec if rec is not None and rec.id == alert_id else None

    def learn_owners(self, owners: Mapping[int, int | None], asked: Iterable[int]) -> None:
        for device_id in asked:
            self._owners[device_id] = owners.get(device_id)

    # ----- evaluation ------------------------------------------------------------------------------

    def _rules_for(self, kr: _KeyRules, device_id: int) -> tuple[CompiledRule, ...] | None:
        """The rules on ``key`` that apply to ``device_id`` (None: its owner must be looked up)."""
        found = list(kr.by_device.get(device_id, ()))
        found += kr.fleet
        if kr.by_owner:
            if device_id not in self._owners:
                return None
            owner = self._owners[device_id]
            if owner is not None:
                found += kr.by_owner.get(owner, ())
        rules = tuple(found)
        kr.resolved[device_id] = rules
        return rules

    def evaluate(self, points: Sequence[Point], now: int) -> tuple[list[Change], list[Point]]:
        """Changes caused by a committed batch, and the points whose device owner is unknown (look
        the owners up, :meth:`learn_owners`, and evaluate those points again)."""
        keys = self._keys
        if not keys:
            return [], []
        obs: dict[tuple[CompiledRule, int], _Obs] = {}
        deferred: list[Point] = []
        for p in points:
            kr = keys.get(p.key)
            if kr is None:
                continue
            v = p.value
            tv = type(v)
            if tv is not float and tv is not int:
                continue
            dev = p.device_id
            rules = kr.resolved.get(dev)
            if rules is None:
                rules = self._rules_for(kr, dev)
                if rules is None:
                    deferred.append(p)
                    continue
            for r in rules:
                if r.test(v, r.threshold):
                    o = obs.get((r, dev))
                    if o is None:
                        o = obs[(r, dev)] = _Obs()
                        r.watch.add(dev)
                    o.see(p.ts_ms, v, True)  # type: ignore[arg-type]
                elif dev in r.watch:
                    o = obs.get((r, dev))
                    if o is None:
                        o = obs[(r, dev)] = _Obs()
                    o.see(p.ts_ms, v, False)  # type: ignore[arg-type]
        changes: list[Change] = []
        for (r, dev), o in obs.items():
            self._settle(r, dev, o, now, changes)
        return changes, deferred

    def _settle(self, r: CompiledRule, dev: int, o: _Obs, now: int, changes: list[Change]) -> None:
        key = (r.id, dev)
        alert = self.open.get(key)
        if o.last_match:
            if alert is None:
                if r.for_ms == 0:
                    self._open(r, dev, o.last_value, now, changes)
                else:
                    pend = self.pending.get(key)
                    if pend is None or o.any_fail:
                        self.pending[key] = pend = _Pending(r, now, float(o.last_value))
                        self.new_pending = True
                    else:
                        pend.value = float(o.last_value)
                    if now - pend.since >= r.for_ms:
                        del self.pending[key]
                        self._open(r, dev, pend.value, now, changes)
        else:
            self.pending.pop(key, None)
            if alert is not None:
                self._resolve(alert, o.last_value, now, changes, "condition")
            elif r.for_ms == 0 and o.match_value is not None:
                spike = self._open(r, dev, o.match_value, now, changes)
                self._resolve(spike, o.last_value, now, changes, "condition")
        if key not in self.open and key not in self.pending:
            r.watch.discard(dev)

    def sweep(self, now: int) -> list[Change]:
        """Open the alerts whose condition has now held for ``for_seconds``."""
        changes: list[Change] = []
        for key, pend in list(self.pending.items()):
            if now - pend.since >= pend.rule.for_ms:
                del self.pending[key]
                if key not in self.open:
                    self._open(pend.rule, key[1], pend.value, now, changes)
        return changes

    def next_due(self) -> int | None:
        """When the earliest pending condition will have held long enough (ms), or None."""
        return min((p.since + p.rule.for_ms for p in self.pending.values()), default=None)

    # ----- transitions -----------------------------------------------------------------------------

    def _open(self, r: CompiledRule, dev: int, value: float, now: int, changes: list[Change]) -> AlertRecord:
        value = float(value)
        rec = AlertRecord(
            id=None,
            rule_id=r.id,
            user_id=self._owners.get(dev),
            device_id=dev,
            key=r.key,
            value=value,
            threshold=r.threshold,
            operator=r.operator,
            severity=r.severity,
            state="open",
            message=alert_message(r.name, r.key, value, r.operator, r.threshold),
            opened_at=now,
        )
        self.open[(r.id, dev)] = rec
        r.watch.add(dev)
        changes.append(
            Change("opened", rec, dataclasses.replace(rec), rule=r, owner_known=dev in self._owners)
        )
        return rec

    def _resolve(
        self, rec: AlertRecord, value: float | None, now: int, changes: list[Change], reason: str
    ) -> None:
        rec.state = "resolved"
        rec.resolved_at = now
        self.forget(rec)
        changes.append(
            Change(
                "resolved",
                rec,
                dataclasses.replace(rec),
                rule=self._rules.get(rec.rule_id),
                value=None if value is None else float(value),
                reason=reason,
            )
        )
