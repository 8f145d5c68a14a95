"""WAL checkpoints of the SQLite time-series store, off the writer's path.

SQLite's automatic checkpoint runs inside the commit that crosses its threshold: with the default
of 16,000 pages that commit (and every request waiting for it) took 150-190 ms once every ~1,700
commits. Here the writer's automatic checkpoint is off; a :class:`Checkpointer` thread with its own
connection copies the WAL back into the database file with ``PRAGMA wal_checkpoint(PASSIVE)``, which
never blocks the writer. Under a steady stream of commits such a checkpoint never catches up with the
very last frames, and the WAL can only start over from its beginning once every frame is back in the
database; so when the WAL has grown past ``restart_frames``, the checkpointer asks the writer to run one
more passive checkpoint between two of its transactions (few frames are left: milliseconds), after
which the next transaction restarts the WAL.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

EVERY_S = 0.2
RESTART_FRAMES = 4000  # 16 MB of 4 KiB pages


class Checkpointer:
    def __init__(
        self,
        path: str,
        finish: Callable[[], None],
        *,
        every_s: float = EVERY_S,
        restart_frames: int = RESTART_FRAMES,
    ) -> None:
        self.path = path
        self._finish = finish  # asks the writer for its finishing checkpoint
        self.every_s = every_s
        self.restart_frames = restart_frames
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ts-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(self.every_s):
                try:
                    _busy, frames, _done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    log.warning("WAL checkpoint of %s failed: %s", self.path, exc)
                    continue
                self.checkpoints += 1
                if frames >= self.restart_frames:
                    self._finish()
        finally:
            conn.close()
