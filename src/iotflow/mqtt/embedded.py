"""The embedded MQTT transport: an amqtt broker inside the IoTFlow process (``spec/mqtt.md``).

Devices connect to IoTFlow itself; their messages go from the broker straight into
:class:`~iotflow.mqtt.handler.MessageHandler` and from there into the ingest pipeline, with no client hop.

**What a PUBACK means.** amqtt (0.12) acknowledges an incoming QoS 1 PUBLISH right after putting it
into the session's in-memory ``delivered_message_queue`` — before any plugin hook runs
(``ProtocolHandler._handle_qos1_message_flow``: ``await queue.put(message)`` then ``PUBACK``; the
``broker_message_received`` event comes later, from another task, and is not awaited). A plugin alone
therefore cannot make PUBACK mean "stored". IoTFlow replaces that queue, per session, with
:class:`_DeviceQueue`, whose ``put`` *is* the processing: it awaits
:meth:`MessageHandler.handle`, which returns after the ingest pipeline has committed the points. So:

- QoS 1: PUBACK is sent only after the message was handled — telemetry committed to the store, a
  status applied, an acknowledgement recorded — or refused for good (bad payload, wrong topic: MQTT
  3.1.1 has no negative PUBACK; the refusal goes to ``iotflow/devices/{id}/errors``). When the ingest
  queue stays full for 30 s the PUBACK is withheld and the connection closed, so the device sends the
  message again. A crash before the commit loses nothing that was acknowledged.
- QoS 2: the same, for PUBCOMP.
- QoS 0: no acknowledgement exists; the message waits in its connection's backlog (at most 10,000
  messages / 8 MiB, more are refused and counted as ``overloaded``) and is handled by a task of that
  connection, up to 256 at once. A crash can lose the QoS 0 messages not yet committed, as MQTT allows.

amqtt reads every packet of a connection into its own task and has no flow control of its own; holding
the PUBACK is what slows a QoS 1 publisher down (its in-flight window fills up).

**Other amqtt behaviour changed here** (``_Broker``): a connection is authenticated *before* an existing
session of the same client id is touched (amqtt deletes it first; a client with wrong credentials could
otherwise drop a device's subscriptions by reusing its client id); a refused connection gets the right
CONNACK code (amqtt only knows "not authorized") and leaves no session behind; the keep-alive is
enforced (1.5 times the client's value, then the connection is closed and its last will published — amqtt
ignores read time-outs); the end of every connection reaches IoTFlow with whether it was a clean
DISCONNECT. A persistent session is resumed only by the device it belongs to: another device that
connects with the same client id (a firmware default, say) ends it and starts afresh, without its
subscriptions. A connection takes over a persistent session still live elsewhere and the session stays
connected (amqtt marked it disconnected when the old connection ended, so commands no longer reached
the new one). A connection is served by one task that waits for its end, with amqtt's lighter
per-connection objects of :mod:`iotflow.mqtt.lean`. Retained messages (IoTFlow keeps one per configured
device, its ``config``) go to a new subscription, and to a persistent session that comes back, for its
own filters and only where the topic ACL lets the client receive them — amqtt walked every subscription
of the broker on each CONNECT, without that check. The last will is
IoTFlow's to handle (no client may subscribe to a topic a device publishes, so amqtt's routing of it
would reach no one). These rely on amqtt internals, hence the pinned amqtt version; the tests cover
each.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
from typing import TYPE_CHECKING, Any

from amqtt.broker import Broker
from amqtt.contexts import Action, BrokerConfig, ListenerConfig, ListenerType
from amqtt.errors import BrokerError
from amqtt.events import BrokerEvents
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.session import Session

from iotflow.config import Settings
from iotflow.errors import ConfigError
from iotflow.mqtt import lean, topics
from iotflow.mqtt.clients import NOT_AUTHORIZED, Client, Refused
from iotflow.mqtt.handler import MessageHandler
from iotflow.mqtt.lean import LazyQueue, LeanHandler, LeanSession
from iotflow.mqtt.stats import MqttStats
from iotflow.timeutil import format_ts

if TYPE_CHECKING:
    from iotflow.runtime import Runtime

log = logging.getLogger("iotflow.mqtt")

CLIENT_KEY = "iotflow.client"  # Session.attributes: the Client of the session's current connection
_AUTHENTICATED = "iotflow.authenticated"  # the Client just authenticated, handed from the plugin
_REFUSAL = "iotflow.refusal"  # the CONNACK code of a refused connection
_HANDLER = "iotflow.handler"  # the protocol handler of the session's current connection
SUBSCRIPTION_REFUSED = 0x80  # SUBACK return code
SESSION_EXPIRY_S = 86_400  # a persistent session unused this long is dropped
STOP_DRAIN_S = 5.0


class _DeviceQueue(LazyQueue):
    """Stands in for a session's ``delivered_message_queue``: every incoming PUBLISH is handled here.

    ``put`` (QoS 1/2) returns only when the message was handled, and amqtt sends PUBACK/PUBCOMP after
    it returns. ``put_nowait`` (QoS 0) hands the message to a task. Nothing is queued for amqtt's own
    routing: device messages are for IoTFlow, no other client may subscribe to them.
    """

    __slots__ = ("_client", "_handler")

    def __init__(self, handler: MessageHandler, client: Client) -> None:
        super().__init__()
        self._handler = handler
        self._client = client

    async def put(self, item: Any) -> None:
        if not await self._handler.handle(self._client, item.topic, bytes(item.data), item.qos or 0):
            self._client.close("overload")
            # Leave amqtt's flow without acknowledging: the device keeps the message and resends it.
            raise asyncio.CancelledError

    def put_nowait(self, item: Any) -> None:
        self._handler.handle_soon(self._client, item.topic, bytes(item.data))


class _Subscriptions(dict[str, list[tuple[Session, int]]]):
    """amqtt's topic filter → subscriptions table, whose ``items()`` is a copy.

    amqtt's broadcast walks ``items()`` and awaits inside the walk (the ACL check of each receiver);
    a filter added or dropped meanwhile (another client subscribing or leaving) ended the walk with
    "dictionary changed size during iteration", and the message reached none of the receivers left."""

    def items(self) -> list[tuple[str, list[tuple[Session, int]]]]:  # type: ignore[override]
        return list(super().items())


class _Broker(Broker):  # type: ignore[misc]
    """amqtt's broker with IoTFlow's connection life cycle (see the module docstring)."""

    def __init__(self, config: BrokerConfig, transport: EmbeddedTransport) -> None:
        lean.install()
        super().__init__(config)
        self._iotflow = transport
        self._filters: dict[str, list[str]] = {}  # client id → the topic filters its session holds
        self._subscriptions: _Subscriptions = _Subscriptions(getattr(self, "_subscriptions"))  # noqa: B009

    # ----- subscriptions by client id (amqtt looked through all of them to drop one session's) --------

    def filters_of(self, client_id: str) -> list[str]:
        return list(self._filters.get(client_id, ()))

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        qos = int(await super().add_subscription(subscription, session))
        if qos != SUBSCRIPTION_REFUSED:
            filters = self._filters.setdefault(session.client_id, [])
            if subscription[0] not in filters:
                filters.append(subscription[0])
        return qos

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        filters = self._filters.get(session.client_id)
        if filters is not None and a_filter in filters:
            filters.remove(a_filter)
            if not filters:
                del self._filters[session.client_id]
        return int(super()._del_subscription(a_filter, session))

    async def _del_all_subscriptions(self, session: Session) -> None:
        for a_filter in self.filters_of(session.client_id):
            self._del_subscription(a_filter, session)
            if not self._subscriptions.get(a_filter, True):
                del self._subscriptions[a_filter]

    async def _delete_session(self, client_id: str) -> None:
        """Called by amqtt before authentication; IoTFlow replaces the old session after it instead."""
        return None

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[LeanHandler, Session]:
        """amqtt's CONNECT handling, with IoTFlow's lighter protocol handler (:mod:`iotflow.mqtt.lean`)."""
        _, session = await super()._initialize_client_session(reader, writer, remote_address, remote_port)
        return LeanHandler(self.plugins_manager, self._subscribe, self._unsubscribe, self._loop), session

    async def _handle_client_session(
        self,
        reader: Any,
        writer: Any,
        client_session: Session,
        handler: LeanHandler,
        server: Any,
        listener_name: str,
    ) -> None:
        previous = self._iotflow.client_of(client_session)  # a persistent session's live connection
        ok = await self._authenticate(client_session, self.listeners_config[listener_name])
        client = client_session.attributes.pop(_AUTHENTICATED, None)
        if not ok or client is None:
            code = client_session.attributes.pop(_REFUSAL, NOT_AUTHORIZED)
            if previous is not None:
                _restore(client_session, previous)  # amqtt copied the refused CONNECT's fields onto it
            await _refuse(writer, code)
            return
        if client_session.clean_session:
            existing = self._sessions.get(client_session.client_id)
            if existing is not None and existing[0] is not client_session:
                await self._cleanup_session(client_session.client_id)  # take-over: close the old one
        elif self._of_another_device(client_session, client):
            # Another device's persistent session under the same client id is not this one's to
            # resume: it ends (with its connection, if live) and this connection starts afresh.
            await self._cleanup_session(client_session.client_id)
            client_session = _fresh(client_session)
        self._iotflow.attach(client, client_session, handler)
        try:
            await self._serve(client_session, handler, reader, writer)
        finally:
            await self._iotflow.detach(handler, clean=False)

    def _of_another_device(self, session: Session, client: Client) -> bool:
        last = session.attributes.get(CLIENT_KEY)
        return (
            isinstance(last, Client)
            and last.device is not None
            and client.device is not None
            and last.device.id != client.device.id
            and self._sessions.get(session.client_id, (None, None))[0] is session
        )

    async def _serve(self, session: Session, handler: LeanHandler, reader: Any, writer: Any) -> None:
        """amqtt's part of an accepted connection, with one task (this one) waiting for its end."""
        client_id = session.client_id
        session.attributes[_HANDLER] = handler
        try:  # however it ends (a failure, the server stopping): no session is left "connected"
            current = self._sessions.get(client_id)
            if session.transitions.is_connected() and current is not None and current[0] is session:
                await current[1].handle_connection_closed()  # a persistent session's live connection:
                await current[1].stop()  # take it over
            handler.attach(session, reader, writer)
            self._sessions[client_id] = (session, handler)
            if not session.transitions.is_connected():
                session.transitions.connect()
            await handler.mqtt_connack_authorize(True)
            await self.plugins_manager.fire_event(
                BrokerEvents.CLIENT_CONNECTED, client_id=client_id, client_session=session
            )
            await handler.start()
            await self._publish_session_retained_messages(session)  # queued while it was away
            if session.parent:  # a persistent session is back: the retained messages of its filters
                for topic_filter, qos in self._subscribed(session):
                    await self._publish_retained_messages_for_subscription((topic_filter, qos), session)
            await handler.disconnected
        finally:
            await self._handle_disconnect(session, handler, handler.disconnected)

    def _subscribed(self, session: Session) -> list[tuple[str, int]]:
        """(filter, granted QoS) of the session's subscriptions."""
        out = []
        for topic_filter in self.filters_of(session.client_id):
            for s, qos in self._subscriptions.get(topic_filter, ()):
                if s.client_id == session.client_id:
                    out.append((topic_filter, qos))
        return out

    async def _subscribe(self, handler: LeanHandler, subscription: Any) -> None:
        await self._handle_subscription(handler.session, handler, self._resolved(subscription))

    async def _unsubscribe(self, handler: LeanHandler, unsubscription: Any) -> None:
        await self._handle_unsubscription(handler.session, handler, self._resolved(unsubscription))

    def _resolved(self, value: Any) -> asyncio.Future[Any]:
        """amqtt's (un)subscription handlers take the waiter their queue gave: here, a done future."""
        done: asyncio.Future[Any] = self._loop.create_future()
        done.set_result(value)
        return done

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        """The retained messages a new subscription matches (IoTFlow retains one per configured
        device): a filter without wildcards is one lookup, instead of amqtt's match of every one."""
        topic_filter, qos = subscription
        retained = self._retained_messages
        if not retained:
            return
        if "#" in topic_filter or "+" in topic_filter:
            prefix = topic_filter.split("+", 1)[0].split("#", 1)[0]
            matching = [
                m for t, m in retained.items() if t.startswith(prefix) and self._matches(t, topic_filter)
            ]
        else:
            message = retained.get(topic_filter)
            matching = [] if message is None else [message]
        handler = self._get_handler(session)
        if handler is None:
            return
        for m in matching:  # in the background: a device slow to acknowledge holds up nothing else
            if not await self._topic_filtering(session, m.topic, Action.RECEIVE):
                continue  # (a session taken over by another device's credentials keeps its filters)
            self._iotflow.handler.spawn(
                _send_retained(handler, m.topic, bytes(m.data), min(qos, m.qos or qos), session.client_id)
            )

    async def _handle_disconnect(self, client_session: Session, handler: Any, disconnect_waiter: Any) -> None:
        """The end of a connection. Its last will is IoTFlow's (``detach``): no client may subscribe to
        a topic a device publishes, so amqtt's own routing of the will would reach no one."""
        ended = disconnect_waiter.done() and not disconnect_waiter.cancelled()
        result = disconnect_waiter.result() if ended else None
        try:
            await self._stop_handler(handler)
        finally:
            if client_session.attributes.get(_HANDLER) is handler:  # not taken over by a newer one
                client_session.transitions.disconnect()
        client_id = client_session.client_id
        await self.plugins_manager.fire_event(
            BrokerEvents.CLIENT_DISCONNECTED, client_id=client_id, client_session=client_session
        )
        await self._iotflow.detach(handler, clean=isinstance(result, DisconnectPacket))

    async def close_listeners(self) -> None:
        """After a failed start: close the listeners that did open."""
        for server in list(self._servers.values()):
            with contextlib.suppress(Exception):
                await server.close_instance()


async def _send_retained(handler: LeanHandler, topic: str, payload: bytes, qos: int, client_id: Any) -> None:
    try:
        await handler.mqtt_publish(topic, payload, qos, retain=True)
    except Exception as exc:  # no PUBACK in time, the connection gone: it gets it at its next subscription
        log.debug("retained %s not delivered to %r: %r", topic, client_id, exc)


_CONNECT_FIELDS = (
    "client_id",
    "clean_session",
    "will_flag",
    "will_message",
    "will_qos",
    "will_retain",
    "will_topic",
    "keep_alive",
    "username",
    "password",
    "remote_address",
    "remote_port",
    "ssl_object",
)


def _fresh(session: Session) -> Session:
    """A new session with the CONNECT's fields (amqtt copied them onto the session it found)."""
    fresh = LeanSession()
    for name in _CONNECT_FIELDS:
        setattr(fresh, name, getattr(session, name))
    fresh.parent = 0  # CONNACK: no session present
    return fresh


async def _refuse(writer: Any, code: int) -> None:
    with contextlib.suppress(Exception):
        await ConnackPacket.build(0, code).to_stream(writer)
    with contextlib.suppress(Exception):
        await writer.close()


def _will_of(session: Session) -> tuple[str, bytes, int] | None:
    if not session.will_flag or not session.will_topic:
        return None
    return session.will_topic, bytes(session.will_message or b""), int(session.will_qos or 0)


def _restore(session: Session, client: Client) -> None:
    """Put back the will and credentials of a live connection's session (see _handle_client_session)."""
    session.username = str(client.device.id) if client.device is not None else None
    session.password = client.keys.get(client.device.id) if client.device is not None else None
    session.will_flag = client.will is not None
    session.will_topic = client.will[0] if client.will else None
    session.will_message = client.will[1] if client.will else None
    session.will_qos = client.will[2] if client.will else None
    session.will_retain = False


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class EmbeddedTransport:
    mode = "embedded"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.stats = MqttStats()
        self.handler = MessageHandler(settings, self.stats, self._publish)
        self._broker: _Broker | None = None
        self._clients: dict[int, Client] = {}  # id(protocol handler) → its Client
        self._stopping = False

    def bind(self, rt: Runtime) -> None:
        """Give the handler the running services (the transport starts before they all exist)."""
        self.handler.bind(rt)

    # ----- life cycle ------------------------------------------------------------------------------

    def _config(self) -> BrokerConfig:
        s = self._settings
        listeners = {"default": ListenerConfig(type=ListenerType.TCP, bind=_bind(s.mqtt_host, s.mqtt_port))}
        if s.mqtt_ws_port:
            listeners["ws"] = ListenerConfig(type=ListenerType.WS, bind=_bind(s.mqtt_host, s.mqtt_ws_port))
        plugin_config = {"transport": self}
        return BrokerConfig(
            listeners=listeners,
            plugins={
                "iotflow.mqtt.plugins.DeviceAuthPlugin": plugin_config,
                "iotflow.mqtt.plugins.TopicAclPlugin": plugin_config,
                "iotflow.mqtt.plugins.SubscriptionEventsPlugin": plugin_config,
            },
            session_expiry_interval=SESSION_EXPIRY_S,
            timeout_disconnect_delay=0,
        )

    async def start(self) -> None:
        if not logging.getLogger("iotflow").isEnabledFor(logging.DEBUG):
            for name in ("amqtt", "transitions"):  # amqtt logs every connection at INFO
                logging.getLogger(name).setLevel(logging.WARNING)
        broker = _Broker(self._config(), self)
        amqtt_log = logging.getLogger("amqtt.broker")
        was_disabled, amqtt_log.disabled = amqtt_log.disabled, True  # its start failure is a traceback
        try:
            await broker.start()
        except BrokerError as exc:
            await broker.close_listeners()
            raise ConfigError(self._start_problem(exc)) from None
        finally:
            amqtt_log.disabled = was_disabled
        self._broker = broker
        log.info("MQTT broker listening on %s", self.listening())

    def _start_problem(self, exc: BaseException) -> str:
        s = self._settings
        cause = exc.__cause__
        port = s.mqtt_port
        setting = "IOTFLOW_MQTT_PORT"
        if s.mqtt_ws_port and f", {s.mqtt_ws_port})" in str(cause):
            port, setting = s.mqtt_ws_port, "IOTFLOW_MQTT_WS_PORT"
        if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
            return (
                f"MQTT port {port} on {s.mqtt_host} is already in use (another MQTT broker, e.g. "
                f"Mosquitto?): set {setting} to a free port, or "
                f"IOTFLOW_MQTT_BROKER_URL=mqtt://{_bind(s.mqtt_host, port)} to use that broker, "
                "or IOTFLOW_MQTT_ENABLED=false"
            )
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause or exc)
        return (
            f"The MQTT broker cannot listen on {self.listening()} ({reason}): check IOTFLOW_MQTT_HOST and "
            f"{setting}, or set IOTFLOW_MQTT_BROKER_URL to use another broker, or IOTFLOW_MQTT_ENABLED=false"
        )

    def listening(self) -> str:
        s = self._settings
        where = f"mqtt://{_bind(s.mqtt_host, s.mqtt_port)}"
        if s.mqtt_ws_port:
            where += f", ws://{_bind(s.mqtt_host, s.mqtt_ws_port)}/mqtt"
        return where

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        self._stopping = True  # connections closed by the shutdown do not mark devices offline
        if broker is not None:
            try:
                await broker.shutdown()
            except Exception as exc:
                log.warning("MQTT broker shutdown: %s", exc)
        await self.handler.drain(STOP_DRAIN_S)

    # ----- connections (called by the broker and the plugins) -------------------------------------

    async def authenticate_session(self, session: Session) -> bool:
        try:
            client = await self.handler.authenticate(
                client_id=str(session.client_id),
                username=session.username,
                password=session.password,
                will=_will_of(session),
            )
        except Refused as refused:
            session.attributes[_REFUSAL] = refused.code
            return False
        session.attributes[_AUTHENTICATED] = client
        return True

    def client_of(self, session: Session) -> Client | None:
        client = session.attributes.get(CLIENT_KEY)
        return client if isinstance(client, Client) and not client.closed else None

    def attach(self, client: Client, session: Session, protocol: Any) -> None:
        """Wire an authenticated connection: its messages, keep-alive and kick go through IoTFlow."""

        def kick(why: str) -> None:  # ends the connection as if the network had failed
            self.handler.spawn(protocol.handle_connection_closed())

        client.kick = kick
        self._clients[id(protocol)] = client
        session.attributes[CLIENT_KEY] = client
        session.delivered_message_queue = _DeviceQueue(self.handler, client)
        if session.keep_alive > 0:  # [MQTT-3.1.2-24]: close after 1.5 keep-alives without a packet
            session.keep_alive = math.ceil(session.keep_alive * 1.5)
        protocol.handle_read_timeout = lambda: client.close("keepalive")
        if self._broker is not None and not session.clean_session:  # it brings its subscriptions back
            client.subscriptions.update(self._broker.filters_of(session.client_id))
        self.handler.connected(client)

    async def detach(self, protocol: Any, *, clean: bool) -> None:
        client = self._clients.pop(id(protocol), None)
        if client is None:
            return
        if self._stopping:
            client.closed = True
            self.stats.disconnects["server_stopped"] += 1
            return
        await self.handler.disconnected(client, clean=clean)

    async def topic_allowed(self, session: Session, topic: str, action: str) -> bool:
        client = self.client_of(session)
        if client is None:
            return False
        if action == "subscribe":
            return await self.handler.may_subscribe(client, topic)
        if action == "receive":
            return await self.handler.may_receive(client, topic)
        return any(topics.may_publish(d, topic) for d in client.device_ids())

    def on_subscription(self, client_id: str, topic_filter: str, *, subscribed: bool) -> None:
        broker = self._broker
        session = broker.sessions.get(client_id, (None, None))[0] if broker is not None else None
        client = self.client_of(session) if session is not None else None
        if client is None:
            return
        if subscribed:
            self.handler.on_subscribed(client, topic_filter)
        else:
            self.handler.on_unsubscribed(client, topic_filter)

    # ----- the MqttTransport contract --------------------------------------------------------------

    def is_connected(self, device_id: int) -> bool:
        return self._broker is not None and self.handler.is_connected(device_id)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        return await self._publish(topic, payload, qos, retain)

    async def _publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        broker = self._broker
        if broker is None:
            return False
        if retain:
            await broker.retain_message(None, topic, payload, qos)
        device_id = topics.device_of(topic)
        delivered = device_id is not None and await self.handler.deliverable(device_id, topic)
        if delivered:
            await broker.internal_message_broadcast(topic, payload, qos)
            self.stats.sent += 1
        return delivered or retain

    async def disconnect_device(self, device_id: int) -> None:
        self.handler.disconnect_device(device_id)

    async def recheck_device(self, device_id: int) -> None:
        for client in self.handler.clients_of(device_id):
            await self.handler.still_valid(client)  # closes the connection when its key fails

    def status(self) -> dict[str, Any]:
        s = self._settings
        broker = self._broker
        stats = self.stats
        return {
            "mode": "embedded",
            "connected": broker is not None,
            "host": s.mqtt_host,
            "port": s.mqtt_port,
            "clients_connected": len(self._clients),
            "subscriptions": self._subscription_count(),
            "messages": {
                "received": sum(stats.received.values()),
                "sent": stats.sent,
                "rejected": sum(stats.rejected.values()),
                "last_message_time": None
                if stats.last_message_ms is None
                else format_ts(stats.last_message_ms),
            },
        }

    def _subscription_count(self) -> int:
        broker = self._broker
        return 0 if broker is None else sum(len(v) for v in broker.subscriptions.values())

    def metrics(self) -> dict[str, Any]:
        s = self._settings
        out = self.stats.as_dict()
        out["connections"].update(
            {"current": len(self._clients), "devices": self.handler.devices_connected()}
        )
        out["subscriptions"]["current"] = self._subscription_count()
        return {
            "mode": "embedded",
            "broker": {
                "running": self._broker is not None,
                "listening": self.listening(),
                "allow_anonymous": s.mqtt_allow_anonymous,
                "max_payload": s.mqtt_max_payload,
            },
            **out,
        }
