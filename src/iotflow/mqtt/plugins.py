"""The amqtt plugins of the embedded broker: thin adapters from amqtt's plugin API to the transport.

- :class:`DeviceAuthPlugin` — CONNECT: username = device id, password = API key (or anonymous in
  compatibility mode); the decision and the CONNACK code come from
  :meth:`iotflow.mqtt.handler.MessageHandler.authenticate`.
- :class:`TopicAclPlugin` — SUBSCRIBE / RECEIVE (and PUBLISH, should a message ever reach amqtt's own
  routing): a device's own ``commands/...``, ``config`` and ``errors`` only.
- :class:`SubscriptionEventsPlugin` — follows subscriptions, so that IoTFlow knows which devices can
  receive a command now and delivers pending commands when a device subscribes to them.

amqtt builds plugins from a ``{"dotted.path": {config}}`` mapping; each gets the transport in its
``Config`` (see :meth:`iotflow.mqtt.embedded.EmbeddedTransport.start`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BasePlugin, BaseTopicPlugin
from amqtt.session import Session


@dataclass
class _TransportConfig:
    transport: Any = None  # the EmbeddedTransport


class DeviceAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    Config = _TransportConfig

    async def authenticate(self, *, session: Session) -> bool | None:
        return bool(await self.config.transport.authenticate_session(session))


class TopicAclPlugin(BaseTopicPlugin):  # type: ignore[misc]
    Config = _TransportConfig

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool | None:
        if session is None or topic is None or action is None:
            return False
        return bool(await self.config.transport.topic_allowed(session, topic, str(action)))


class SubscriptionEventsPlugin(BasePlugin):  # type: ignore[misc]
    Config = _TransportConfig

    async def on_broker_client_subscribed(self, *, client_id: str, topic: str, qos: int) -> None:
        self.config.transport.on_subscription(client_id, topic, subscribed=True)

    async def on_broker_client_unsubscribed(self, *, client_id: str, topic: str) -> None:
        self.config.transport.on_subscription(client_id, topic, subscribed=False)
