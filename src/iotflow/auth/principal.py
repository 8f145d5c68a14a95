"""Who is calling: a device (API key), a user (Bearer token) or an administrator."""

from __future__ import annotations

from typing import Literal, NamedTuple

from iotflow.cache.base import DeviceAuth


class Principal(NamedTuple):
    """``admin`` is the admin token or a user with ``is_admin``; ``user_id`` is the user's int id."""

    kind: Literal["device", "user", "admin"]
    device: DeviceAuth | None = None
    user_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"

    @property
    def is_user(self) -> bool:
        return self.kind in ("user", "admin") and self.user_id is not None
