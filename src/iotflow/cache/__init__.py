"""Caches. :func:`get_cache` picks the backend from ``IOTFLOW_REDIS_URL``."""

from __future__ import annotations

from iotflow.cache.base import Cache
from iotflow.cache.memory import MemoryCache
from iotflow.config import Settings
from iotflow.errors import ConfigError


def get_cache(settings: Settings) -> Cache:
    if settings.redis_url:
        raise ConfigError("IOTFLOW_REDIS_URL: the Redis cache is not available in this version; unset it")
    return MemoryCache()
