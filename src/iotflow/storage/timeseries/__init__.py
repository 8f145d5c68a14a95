"""Time-series stores. :func:`get_timeseries_store` picks the backend from the URL scheme."""

from __future__ import annotations

from typing import TYPE_CHECKING

from iotflow.errors import ConfigError
from iotflow.storage.timeseries.base import TimeseriesStore

if TYPE_CHECKING:  # not imported at run time: the store's read processes import this package
    from iotflow.config import Settings


def get_timeseries_store(settings: Settings) -> TimeseriesStore:
    from iotflow.config import sqlite_path

    url = settings.effective_timeseries_url
    if url.startswith("sqlite"):
        from iotflow.storage.timeseries.sqlite import SqliteTimeseriesStore

        path = sqlite_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteTimeseriesStore(
            str(path),
            chunk_ms=settings.timeseries_chunk_hours * 3_600_000,
            read_processes=settings.read_processes,
            write_process=settings.write_process,
        )
    raise ConfigError(
        f"IOTFLOW_TIMESERIES_URL: no telemetry store for {url.split(':', 1)[0]!r} in this version "
        "(supported: sqlite)"
    )
