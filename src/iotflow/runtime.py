"""The Runtime: every long-lived resource of a running IoTFlow, built and closed by the app lifespan."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from iotflow.alerts.repository import AlertRepository
from iotflow.alerts.service import AlertService
from iotflow.auth.tokens import TokenCodec
from iotflow.cache import get_cache
from iotflow.cache.base import Cache
from iotflow.commands.repository import CommandRepository
from iotflow.commands.service import CommandService
from iotflow.config import Settings
from iotflow.devices.presence import Presence
from iotflow.devices.repository import DeviceRepository
from iotflow.devices.service import DeviceService
from iotflow.errors import ConfigError
from iotflow.events.service import EventLog
from iotflow.groups.repository import GroupRepository
from iotflow.groups.service import GroupService
from iotflow.ingest.pipeline import IngestPipeline
from iotflow.metrics.registry import Metrics
from iotflow.mqtt import bind_runtime, dynsec, open_transport
from iotflow.mqtt.alerts import AlertPublisher
from iotflow.mqtt.base import MqttTransport
from iotflow.mqtt.configs import ConfigPublisher
from iotflow.ratelimit.service import RateLimits
from iotflow.storage import db
from iotflow.storage.timeseries import get_timeseries_store
from iotflow.storage.timeseries.base import TimeseriesStore
from iotflow.telemetry.service import TelemetryService
from iotflow.users.repository import UserRepository
from iotflow.users.service import UserService


@dataclass(slots=True)
class Runtime:
    settings: Settings
    engine: AsyncEngine
    store: TimeseriesStore
    cache: Cache
    pipeline: IngestPipeline
    presence: Presence
    devices: DeviceService
    telemetry: TelemetryService
    users: UserService
    groups: GroupService
    alerts: AlertService
    events: EventLog
    limits: RateLimits
    metrics: Metrics
    mqtt: MqttTransport
    commands: CommandService
    started_at: float


@asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Build every resource; close them in reverse order on exit (also when start-up fails)."""
    async with AsyncExitStack() as stack:
        engine = db.create_engine(settings.effective_database_url)
        stack.push_async_callback(engine.dispose)
        await db.migrate(engine, "upgrade", "head")

        store = get_timeseries_store(settings)
        await store.open()
        stack.push_async_callback(store.close)

        cache = get_cache(settings)
        stack.push_async_callback(cache.close)

        sessions = db.sessionmaker(engine)
        repo = DeviceRepository(sessions)
        events = EventLog(sessions)
        await events.start()
        stack.push_async_callback(events.stop)

        presence = Presence(repo, cache, events, offline_after_s=settings.device_offline_after)
        await presence.start()
        stack.push_async_callback(presence.stop)

        pipeline = IngestPipeline(
            store,
            cache,
            max_queue_points=settings.ingest_queue_points,
            max_batch_points=settings.ingest_max_batch,
        )
        metrics = Metrics()
        pipeline.add_commit_observer(metrics.batch_committed)
        await pipeline.start()
        stack.push_async_callback(pipeline.stop)

        devices = DeviceService(repo, cache, store, presence, events, key_length=settings.api_key_length)
        devices.start()
        stack.push_async_callback(devices.close)
        telemetry = TelemetryService(settings, store, cache, pipeline, devices, events)
        if not settings.secret_key:
            raise ConfigError("IOTFLOW_SECRET_KEY is not set and no data directory provided one")
        users = UserService(
            UserRepository(sessions), TokenCodec(settings.secret_key, settings.token_ttl), devices
        )
        await users.start()
        groups = GroupService(GroupRepository(sessions), users, telemetry)
        alerts = AlertService(AlertRepository(sessions), events)
        await alerts.start()
        stack.push_async_callback(alerts.stop)
        pipeline.add_listener(alerts.on_points)
        devices.on_delete(alerts.forget_device)
        users.on_delete(alerts.forget_user)
        mqtt = open_transport(settings)  # embedded broker, external broker client, or disabled
        await mqtt.start()
        stack.push_async_callback(mqtt.stop)
        devices.on_revoke(mqtt.disconnect_device)
        devices.on_recheck(mqtt.recheck_device)
        configs = ConfigPublisher(mqtt)
        devices.on_config(configs.changed)
        devices.on_delete(configs.deleted)
        alerts.hub.add_observer(AlertPublisher(mqtt))
        if settings.mqtt_dynsec:
            dynsec.attach(mqtt, devices)  # one Mosquitto client per device
        commands = CommandService(CommandRepository(sessions), mqtt, events, users)
        await commands.start()
        stack.push_async_callback(commands.stop)

        rt = Runtime(
            settings=settings,
            engine=engine,
            store=store,
            cache=cache,
            pipeline=pipeline,
            presence=presence,
            devices=devices,
            telemetry=telemetry,
            users=users,
            groups=groups,
            alerts=alerts,
            events=events,
            limits=RateLimits(settings, on_refused=metrics.rate_limited),
            metrics=metrics,
            mqtt=mqtt,
            commands=commands,
            started_at=time.time(),
        )
        bind_runtime(mqtt, rt)  # the MQTT side needs the services built after it
        yield rt
