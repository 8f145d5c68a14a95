"""The write side of the SQLite time-series store. Every method runs on the one writer thread or process.

New points land in ``head``, a small table with the chunks' layout that every batch appends to, and
are moved into the time chunks in bulk ("compaction"). Compaction goes in steps of whole series
(about a tenth of ``head_rows`` points each): from half of ``head_rows`` on, one step at most every
``STEP_EVERY_S`` in the batch that comes along; from ``head_rows`` on, one step per batch; beyond four
times ``head_rows`` everything at once. A step keeps a commit a few milliseconds longer, where moving
all of ``head`` at once held one commit (and every request waiting for it) for a few hundred.
Writing straight into the chunks would dirty one page per series per batch (a fleet-wide batch
touches every series); with ``head`` a batch dirties only ``head``'s few pages, and compaction
writes each series' page once for dozens of its points. A series with a run of ``DIRECT_MIN`` or
more new points in one batch and none in head (a device sending a minute of readings at once) skips
head: its run fills pages of its own either way, and written straight into its chunk it is written
once instead of three times (into head, out of head, into the chunk).

Invariant: a point in ``head`` is newer than every compacted point of its series
(``ts > series.last_ts``), so ``head`` and the chunks never hold the same (series, ts) and a reader
simply reads ``head`` as one more, newest, chunk. A point at or before ``series.last_ts``
(a backfill or a retry of compacted data) is written straight into its chunk instead.
``series.count/first_ts/last_ts/last_*`` describe the compacted points only; readers add ``head``
on top (it is small and indexed by series). ``series.unit`` and ``series.types`` cover every point:
the writer keeps both in memory and updates the row in the batch that changes them (rarely).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from itertools import chain, groupby
from operator import itemgetter
from typing import Any, TypeVar

from iotflow.storage.timeseries._sqlite_codec import (
    BIT_FLOAT,
    INT_MAX,
    INT_MIN,
    chunks_between,
    encode,
    parse_table,
    table,
)
from iotflow.storage.timeseries.base import Point

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1

# ``last_v`` and the ``v`` columns are declared without a type on purpose: no type affinity, so a
# REAL 50.0 stays REAL and the TEXT "12" stays TEXT (a declared type such as ANY gets NUMERIC
# affinity in a non-STRICT table and would convert both).
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value) WITHOUT ROWID",
    """CREATE TABLE IF NOT EXISTS series(
        id INTEGER PRIMARY KEY,
        device_id INTEGER NOT NULL,
        key TEXT NOT NULL,
        unit TEXT,
        first_ts INTEGER,
        last_ts INTEGER,
        count INTEGER NOT NULL DEFAULT 0,
        types INTEGER NOT NULL DEFAULT 0,
        last_t INTEGER,
        last_v,
        UNIQUE(device_id, key)
    )""",
    "CREATE TABLE IF NOT EXISTS head(s INTEGER NOT NULL, ts INTEGER NOT NULL, t INTEGER, v, "
    "PRIMARY KEY(s, ts)) WITHOUT ROWID",
    # How many transactions changed each chunk table: readers may keep what they computed from a
    # chunk for as long as its count stays the same (see ``_sqlite_partials``).
    "CREATE TABLE IF NOT EXISTS changes(chunk INTEGER PRIMARY KEY, n INTEGER NOT NULL)",
)
_COUNT_CHANGE = "INSERT INTO changes(chunk, n) VALUES (?, 1) ON CONFLICT(chunk) DO UPDATE SET n = n + 1"
_CHUNK_DDL = (
    "CREATE TABLE {}(s INTEGER NOT NULL, ts INTEGER NOT NULL, t INTEGER, v, PRIMARY KEY(s, ts)) WITHOUT ROWID"
)

# Fold backfilled points into a series row. All right-hand sides see the row before the UPDATE.
_UPDATE_SERIES = """
UPDATE series SET
    first_ts = CASE WHEN first_ts IS NULL OR ?1 < first_ts THEN ?1 ELSE first_ts END,
    last_ts = CASE WHEN last_ts IS NULL OR ?2 > last_ts THEN ?2 ELSE last_ts END,
    last_t = CASE WHEN last_ts IS NULL OR ?2 >= last_ts THEN ?4 ELSE last_t END,
    last_v = CASE WHEN last_ts IS NULL OR ?2 >= last_ts THEN ?5 ELSE last_v END,
    count = count + ?3
WHERE id = ?6
"""
# Fold compacted head points into a series row: they are all newer than its compacted points.
_FOLD_HEAD = (
    "UPDATE series SET count = count + ?, first_ts = coalesce(first_ts, ?), last_ts = ?, last_t = ?, "
    "last_v = ? WHERE id = ?"
)
_CLEAR_SERIES = (
    "UPDATE series SET count = 0, first_ts = NULL, last_ts = NULL, last_t = NULL, last_v = NULL WHERE id = ?"
)

# Rows bound for head carry the type tag 0 instead of NULL (SQL turns it back into NULL): Python's
# sqlite3 binds int, float and str directly but looks for an adapter for every None it binds, which
# cost about a tenth of the writer's time on a float-only batch.
_NO_TAG = 0
_ROWS_PER_INSERT = 50
_INSERT_ONE = "INSERT OR IGNORE INTO {}(s, ts, t, v) VALUES (?, ?, NULLIF(?, 0), ?)"
_INSERT_MANY = "INSERT OR IGNORE INTO {}(s, ts, t, v) VALUES " + ", ".join(
    ["(?, ?, NULLIF(?, 0), ?)"] * _ROWS_PER_INSERT
)
_UPDATE_ROW = "UPDATE {} SET t = NULLIF(?, 0), v = ? WHERE s = ? AND ts = ?"
DIRECT_MIN = 32  # points of one series in a batch from which they skip head (see _split_direct)

Row = tuple[int, int, int | None, Any]  # (s, ts, t, v)
Fold = tuple[int, int | None, int, int | None, Any, int]  # _FOLD_HEAD's (count, first, last, t, v, s)
_SID = itemgetter(0)
_SID_TS = itemgetter(0, 1)
_NO_TS = INT_MIN - 1  # "no compacted point": every timestamp is newer
STEP_EVERY_S = 0.1  # below head_rows, compaction steps are at least this far apart
WAL_AUTOCHECKPOINT = 0  # off: see _sqlite_checkpoint
_MISSING = object()


def connect(path: str, *, synchronous: str, cache_kib: int, readonly: bool) -> sqlite3.Connection:
    """Open a connection in autocommit mode (transactions are explicit) with the store's pragmas."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=512)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
    conn.execute("PRAGMA temp_store = MEMORY")
    if readonly:
        # No mmap: mapped pages count in the process's resident memory (two readers mapping 256 MiB
        # each took a 10-million-point server from 190 to 430 MB RSS after reading every history
        # once) and reads measured no faster with it.
        conn.execute("PRAGMA query_only = 1")
    else:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}")
        conn.execute("PRAGMA journal_size_limit = 67108864")
    return conn


def _upsert_rows(conn: sqlite3.Connection, table_name: str, rows: list[Row]) -> int:
    """Write head-tagged rows (t = 0 for NULL), sorted by (s, ts), into a table; returns how many
    were new. Rows whose (s, ts) was there already (a rewrite, or a repeat within ``rows``) are then
    applied in order, so the last one wins. Multi-row INSERTs cost about half as much per row as
    executemany() of one-row INSERTs."""
    full = len(rows) - len(rows) % _ROWS_PER_INSERT
    flat = list(chain.from_iterable(rows[:full]))
    step = 4 * _ROWS_PER_INSERT
    many = _INSERT_MANY.format(table_name)
    inserted: int = sum(conn.execute(many, flat[i : i + step]).rowcount for i in range(0, len(flat), step))
    if full < len(rows):
        inserted += conn.executemany(_INSERT_ONE.format(table_name), rows[full:]).rowcount
    if inserted < len(rows):
        conn.executemany(_UPDATE_ROW.format(table_name), [(t, v, s, ts) for s, ts, t, v in rows])
    return inserted


def _int_ts(ts: object) -> int:
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise ValueError(f"timestamp must be an int of milliseconds, got {ts!r}")
    if not INT_MIN <= ts <= INT_MAX:
        raise ValueError(f"timestamp out of 64-bit range: {ts}")
    return int(ts)


def _restore(d: dict[Any, Any], key: Any, old: Any) -> None:
    if old is _MISSING:
        d.pop(key, None)
    else:
        d[key] = old


class Writer:
    """Owns the write connection and the in-memory maps that make writes cheap."""

    def __init__(self, path: str, chunk_ms: int, synchronous: str, head_rows: int) -> None:
        self.path = path
        self.chunk_ms = chunk_ms
        self.synchronous = synchronous
        self.head_rows = head_rows
        self.chunks: tuple[int, ...] = ()  # the chunk tables, sorted (refreshed after each commit)
        self._chunk_set: set[int] = set()
        self._ids: dict[tuple[int, str], int] = {}  # (device, key) → series id
        self._last: dict[int, int] = {}  # series id → newest compacted ts (series.last_ts)
        self._units: dict[int, str | None] = {}  # series id → unit
        self._types: dict[int, int] = {}  # series id → type bits seen
        self._head_count = 0  # points in head
        self._in_head: set[int] = set()  # series with points in head (or that had some: a superset)
        self._step_from = 0  # the series id the next compaction step starts at (round robin)
        self._last_step = 0.0  # time.monotonic() of the last compaction step
        self._undo: list[Callable[[], None]] = []  # restores the in-memory state on rollback
        self._changed: set[int] = set()  # the chunks the current transaction writes to
        self._data_version = 0  # PRAGMA data_version when the maps were read: see _transaction
        self.restart_wal = threading.Event()  # set by the checkpointer: finish its checkpoint
        self._conn: sqlite3.Connection | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        conn = connect(self.path, synchronous=self.synchronous, cache_kib=65536, readonly=False)
        self._conn = conn
        for ddl in _SCHEMA:
            conn.execute(ddl)
        row = conn.execute("SELECT value FROM meta WHERE name = 'chunk_ms'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta(name, value) VALUES ('chunk_ms', ?)", (self.chunk_ms,))
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif int(row[0]) != self.chunk_ms:
            log.warning("time-series file %s uses chunk_ms=%s; ignoring %s", self.path, row[0], self.chunk_ms)
            self.chunk_ms = int(row[0])
        conn.execute("BEGIN IMMEDIATE")  # after any transaction another writer is in (see _transaction)
        try:
            self._load(conn)
        finally:
            conn.execute("COMMIT")

    def _load(self, conn: sqlite3.Connection) -> None:
        """Read the in-memory maps from the file."""
        for d in (self._ids, self._last, self._units, self._types):
            d.clear()
        self._chunk_set.clear()
        for sid, device_id, key, unit, types, last_ts in conn.execute(
            "SELECT id, device_id, key, unit, types, last_ts FROM series"
        ):
            self._ids[(device_id, key)] = sid
            self._units[sid] = unit
            self._types[sid] = types
            if last_ts is not None:
                self._last[sid] = last_ts
        self._head_count = conn.execute("SELECT count(*) FROM head").fetchone()[0]
        self._in_head = {s for (s,) in conn.execute("SELECT DISTINCT s FROM head")}
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            chunk = parse_table(name)
            if chunk is not None:
                self._chunk_set.add(chunk)
        self.chunks = tuple(sorted(self._chunk_set))
        self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.execute("PRAGMA optimize")
            finally:
                conn.close()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("time-series store is not open")
        return self._conn

    def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in one write transaction; on any error roll back the DB and in-memory state."""
        conn = self.conn
        self._undo = []
        self._changed.clear()
        conn.execute("BEGIN IMMEDIATE")
        if conn.execute("PRAGMA data_version").fetchone()[0] != self._data_version:
            # Another connection wrote since this writer's last transaction (a one-shot CLI command
            # beside the server, or a write process that outlived a killed server and finished its
            # batch): the in-memory maps may be stale.
            try:
                self._load(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        head_count, n_chunks = self._head_count, len(self._chunk_set)
        try:
            result = body(conn)
            if self._changed:
                conn.executemany(_COUNT_CHANGE, [(c,) for c in self._changed])
            conn.execute("COMMIT")
        except BaseException:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            finally:
                for undo in reversed(self._undo):
                    undo()
                self._head_count = head_count
            raise
        if len(self._chunk_set) != n_chunks:
            self.chunks = tuple(sorted(self._chunk_set))
        return result

    def _put(self, d: dict[Any, Any], key: Any, value: Any) -> None:
        self._undo.append(partial(_restore, d, key, d.get(key, _MISSING)))
        d[key] = value

    def _pop(self, d: dict[Any, Any], key: Any) -> None:
        if key in d:
            self._undo.append(partial(_restore, d, key, d.pop(key)))

    def _new_series(self, conn: sqlite3.Connection, device_id: int, key: str) -> int:
        if not isinstance(key, str):
            raise ValueError(f"key must be a string, got {key!r}")
        sid = conn.execute("INSERT INTO series(device_id, key) VALUES (?, ?)", (device_id, key)).lastrowid
        assert sid is not None
        self._put(self._ids, (device_id, key), sid)
        self._put(self._units, sid, None)
        self._put(self._types, sid, 0)
        return sid

    def _chunk_table(self, conn: sqlite3.Connection, chunk: int) -> str:
        """The table of a chunk the transaction writes to (created if need be)."""
        self._changed.add(chunk)
        name = table(chunk)
        if chunk not in self._chunk_set:
            conn.execute(_CHUNK_DDL.format(name))
            self._chunk_set.add(chunk)
            self._undo.append(partial(self._chunk_set.discard, chunk))
        return name

    # -- writes ------------------------------------------------------------------------------

    def write_batch(self, points: Sequence[Point] | Sequence[list[Any]]) -> int:
        """Write ``points``: :class:`Point` tuples, or lists of the same five fields as they arrive
        from the server in the write process."""
        if not points:
            return 0
        written = self._transaction(lambda conn: self._write(conn, points))
        if self.restart_wal.is_set():
            self.finish_checkpoint()
        return written

    def finish_checkpoint(self) -> None:
        """Copy the WAL's last frames back (between two transactions, so it completes): the next
        transaction then starts the WAL over instead of growing it."""
        self.restart_wal.clear()
        try:
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint of %s failed: %s", self.path, exc)

    def _write(self, conn: sqlite3.Connection, points: Sequence[Point] | Sequence[list[Any]]) -> int:
        ids, last, types = self._ids, self._last, self._types
        head: list[Row] = []  # newer than anything compacted in their series
        old: list[Row] = []  # at or before the newest compacted point: straight into the chunks
        units: dict[int, str] = {}
        new_types: dict[int, int] = {}
        t: int | None
        for device_id, key, ts, value, unit in points:
            sid = ids.get((device_id, key))
            if sid is None:
                sid = self._new_series(conn, device_id, key)
            if type(value) is float and value - value == 0.0:  # a finite float: the common case
                t, bit, value = None, BIT_FLOAT, value + 0.0  # (-0.0 is stored as 0.0, as encode does)
            else:
                t, value, bit = encode(value)
            if type(ts) is not int:
                ts = _int_ts(ts)
            if ts > last.get(sid, _NO_TS):
                head.append((sid, ts, _NO_TAG if t is None else t, value))
            else:
                old.append((sid, ts, t, value))
            if not types[sid] & bit:
                new_types[sid] = new_types.get(sid, 0) | bit
            if unit is not None:
                units[sid] = unit
        new = 0
        if head:
            head, direct = self._split_direct(head)
            if direct:
                new += self._insert_direct(conn, direct)
            if head:
                new += self._insert_head(conn, head)
        if old:
            new += self._backfill(conn, old)
        for sid, bits in new_types.items():
            conn.execute("UPDATE series SET types = types | ? WHERE id = ?", (bits, sid))
            self._put(types, sid, types[sid] | bits)
        for sid, unit in units.items():
            if self._units.get(sid) != unit:
                conn.execute("UPDATE series SET unit = ? WHERE id = ?", (unit, sid))
                self._put(self._units, sid, unit)
        self._maybe_compact(conn)
        return new

    def _maybe_compact(self, conn: sqlite3.Connection) -> None:
        count, rows = self._head_count, self.head_rows
        if count < rows // 2:
            return
        if count >= 4 * rows:  # far behind (a burst beyond what steps keep up with)
            self.compact(conn)
            return
        now = time.monotonic()
        if count >= rows or now - self._last_step >= STEP_EVERY_S:
            self._compact_step(conn, max(rows // 10, 1))
            self._last_step = now

    def _split_direct(self, rows: list[Row]) -> tuple[list[Row], list[list[Row]]]:
        """Sort new rows by (s, ts) and take out the series that go straight into their chunks: those
        with at least ``DIRECT_MIN`` points in the batch and none in head (a device sending a run of
        readings at once). Their points would fill whole pages of head only to be copied out again;
        written straight to the chunks they dirty about as many pages, once."""
        rows.sort(key=_SID_TS)  # stable: of equal (s, ts) the last one stays last
        # A run of DIRECT_MIN rows of one series spans two rows half of that apart at a multiple of
        # half: a batch of a fleet's single readings is passed over in len(rows) / half steps.
        half = DIRECT_MIN // 2
        if not any(rows[i][0] == rows[i + half][0] for i in range(0, len(rows) - half, half)):
            return rows, []
        in_head = self._in_head
        rest: list[Row] = []
        direct: list[list[Row]] = []
        for sid, group in groupby(rows, key=_SID):
            series = list(group)
            if len(series) >= DIRECT_MIN and sid not in in_head:
                direct.append(series)
            else:
                rest += series
        return rest, direct

    def _insert_direct(self, conn: sqlite3.Connection, groups: list[list[Row]]) -> int:
        """Append each series' rows (sorted, all newer than its compacted points, none in head) to
        its chunks and fold them into its catalogue row, as a compaction of them would."""
        chunk_ms = self.chunk_ms
        by_chunk: dict[int, list[Row]] = {}
        for series in groups:
            chunk = series[0][1] // chunk_ms
            if chunk == series[-1][1] // chunk_ms:
                by_chunk.setdefault(chunk, []).extend(series)
            else:
                for row in series:
                    by_chunk.setdefault(row[1] // chunk_ms, []).append(row)
        duplicates = False
        for chunk, rows in by_chunk.items():
            if _upsert_rows(conn, self._chunk_table(conn, chunk), rows) < len(rows):  # a (s, ts) twice
                duplicates = True
        fold: list[Fold] = []
        for series in groups:
            sid, last_ts, tag, v = series[-1]
            n = len({row[1] for row in series}) if duplicates else len(series)
            first = None if sid in self._last else series[0][1]
            fold.append((n, first, last_ts, None if tag == _NO_TAG else tag, v, sid))
        self._fold(conn, fold)
        return sum(f[0] for f in fold)

    def _fold(self, conn: sqlite3.Connection, fold: list[Fold]) -> None:
        """Fold newly compacted points into their series rows (count, first and last timestamp, the
        latest value) and remember each series' newest compacted timestamp."""
        conn.executemany(_FOLD_HEAD, fold)
        for _, _, last_ts, _, _, sid in fold:
            self._put(self._last, sid, last_ts)

    def _insert_head(self, conn: sqlite3.Connection, rows: list[Row]) -> int:
        """Insert new rows, sorted by (s, ts), into head."""
        inserted = _upsert_rows(conn, "head", rows)  # (rewrites of points still in head in batch order)
        self._head_count += inserted
        added = {row[0] for row in rows} - self._in_head
        if added:
            self._in_head |= added
            self._undo.append(partial(self._in_head.difference_update, added))
        return inserted

    def _backfill(self, conn: sqlite3.Connection, rows: list[Row]) -> int:
        """Upsert points that belong among compacted data directly into their chunks."""
        by_chunk: dict[int, dict[tuple[int, int], Row]] = {}
        for row in rows:  # the dict keeps the last of duplicate (s, ts)
            by_chunk.setdefault(row[1] // self.chunk_ms, {})[row[0], row[1]] = row
        new: Counter[int] = Counter()
        stats: dict[int, list[Any]] = {}  # s → [first, last, last t, last v]
        for chunk, keyed in by_chunk.items():
            chunk_rows = sorted(keyed.values(), key=_SID_TS)
            self._upsert_chunk(conn, self._chunk_table(conn, chunk), chunk_rows, new)
            for s, ts, t, v in chunk_rows:
                st = stats.get(s)
                if st is None:
                    stats[s] = [ts, ts, t, v]
                    continue
                st[0] = min(st[0], ts)
                if ts >= st[1]:
                    st[1], st[2], st[3] = ts, t, v
        conn.executemany(_UPDATE_SERIES, [(f, la, new[s], lt, lv, s) for s, (f, la, lt, lv) in stats.items()])
        return sum(new.values())

    @staticmethod
    def _upsert_chunk(conn: sqlite3.Connection, name: str, rows: list[Row], new: Counter[int]) -> None:
        """Upsert rows (sorted by (s, ts), unique) into one chunk, counting new rows per series."""
        insert = f"INSERT OR IGNORE INTO {name}(s, ts, t, v) VALUES (?, ?, ?, ?)"
        conn.execute("SAVEPOINT chunk")
        if conn.executemany(insert, rows).rowcount == len(rows):
            conn.execute("RELEASE chunk")
            new.update(map(_SID, rows))
            return
        # Some rows replace existing points: redo series by series to count exactly.
        conn.execute("ROLLBACK TO chunk")
        conn.execute("RELEASE chunk")
        update = f"UPDATE {name} SET t = ?, v = ? WHERE s = ? AND ts = ?"
        for sid, group in groupby(rows, key=_SID):
            batch = list(group)
            inserted = conn.executemany(insert, batch).rowcount
            new[sid] += inserted
            if inserted < len(batch):
                conn.executemany(update, [(t, v, s, ts) for s, ts, t, v in batch])

    def compact(self, conn: sqlite3.Connection) -> None:
        """Move every point of ``head`` into its chunk and fold it into the series catalogue."""
        self._move(conn, INT_MIN, INT_MAX)
        self._head_count = 0

    def _compact_step(self, conn: sqlite3.Connection, rows: int) -> None:
        """Move the head points of the next whole series (about ``rows`` points), round robin."""
        start = self._step_from
        # The series holding the rows-th head point after ``start`` ends the step (it stays in head)...
        row = conn.execute(
            "SELECT s FROM head WHERE s >= ? ORDER BY s, ts LIMIT 1 OFFSET ?", (start, rows)
        ).fetchone()
        if row is None:  # ...fewer points than that left after ``start``: up to the end, then wrap
            end, self._step_from = INT_MAX, 0
        elif row[0] > start:
            end = self._step_from = row[0]
            end -= 1
        else:  # one series holds them all: it goes alone
            end, self._step_from = start, start + 1
        self._head_count -= self._move(conn, start, end)

    def _move(self, conn: sqlite3.Connection, first_s: int, last_s: int) -> int:
        """Move the head points of series ``first_s``..``last_s`` into their chunks; returns how many."""
        chunk_ms = self.chunk_ms
        floor_div = "(ts - ((ts % ?1) + ?1) % ?1) / ?1"  # floor(ts / chunk_ms), also for negative ts
        in_range = "s BETWEEN ?2 AND ?3"
        chunks = [
            c
            for (c,) in conn.execute(
                f"SELECT DISTINCT {floor_div} FROM head WHERE {in_range}", (chunk_ms, first_s, last_s)
            )
        ]
        if len(chunks) <= 4:  # the usual case: one set-based copy per chunk, in (s, ts) order
            for chunk in chunks:
                lo, hi = max(chunk * chunk_ms, INT_MIN), min((chunk + 1) * chunk_ms - 1, INT_MAX)
                conn.execute(
                    f"INSERT OR REPLACE INTO {self._chunk_table(conn, chunk)}(s, ts, t, v) "
                    "SELECT s, ts, t, v FROM head WHERE s BETWEEN ? AND ? AND ts BETWEEN ? AND ?",
                    (first_s, last_s, lo, hi),
                )
        else:  # points spread over many chunks (e.g. history imported for new keys)
            by_chunk: dict[int, list[Row]] = {}
            for row in conn.execute(
                "SELECT s, ts, t, v FROM head WHERE s BETWEEN ? AND ?", (first_s, last_s)
            ):
                by_chunk.setdefault(row[1] // chunk_ms, []).append(row)
            for chunk, rows in by_chunk.items():
                name = self._chunk_table(conn, chunk)
                conn.executemany(f"INSERT OR REPLACE INTO {name}(s, ts, t, v) VALUES (?, ?, ?, ?)", rows)
        # SQLite takes the bare columns t, v from the row holding max(ts).
        stats = conn.execute(
            "SELECT s, max(ts), t, v, count(*) FROM head WHERE s BETWEEN ? AND ? GROUP BY s",
            (first_s, last_s),
        ).fetchall()
        fold: list[Fold] = []
        for s, la, t, v, n in stats:
            first = None  # only a series without compacted points gets its first timestamp from head
            if s not in self._last:
                first = conn.execute("SELECT min(ts) FROM head WHERE s = ?", (s,)).fetchone()[0]
            fold.append((n, first, la, t, v, s))
        self._fold(conn, fold)
        moved: int = conn.execute("DELETE FROM head WHERE s BETWEEN ? AND ?", (first_s, last_s)).rowcount
        gone = {s for *_, s in fold} & self._in_head  # the series that had points in this range
        if gone:
            self._in_head -= gone
            self._undo.append(partial(self._in_head.update, gone))
        return moved

    # -- deletes -----------------------------------------------------------------------------

    def delete(
        self, device_id: int, keys: Sequence[str] | None, start_ms: int | None, end_ms: int | None
    ) -> int:
        lo = INT_MIN if start_ms is None else start_ms
        hi = INT_MAX if end_ms is None else end_ms
        wanted = None if keys is None else set(keys)
        return self._transaction(lambda conn: self._delete(conn, device_id, wanted, lo, hi))

    def delete_device(self, device_id: int) -> int:
        return self._transaction(lambda conn: self._delete(conn, device_id, None, INT_MIN, INT_MAX))

    def _delete(
        self, conn: sqlite3.Connection, device_id: int, wanted: set[str] | None, lo: int, hi: int
    ) -> int:
        rows = conn.execute(
            "SELECT id, key, first_ts, last_ts, count FROM series WHERE device_id = ?", (device_id,)
        ).fetchall()
        total = 0
        for sid, key, first, last, count in rows:
            if wanted is not None and key not in wanted:
                continue
            in_head: int = conn.execute(
                "DELETE FROM head WHERE s = ? AND ts BETWEEN ? AND ?", (sid, lo, hi)
            ).rowcount
            self._head_count -= in_head
            in_chunks = (
                self._delete_compacted(conn, sid, first, last, count, lo, hi) if first is not None else 0
            )
            total += in_head + in_chunks
            if (
                (in_head or in_chunks or first is None)
                and sid not in self._last
                and conn.execute("SELECT 1 FROM head WHERE s = ? LIMIT 1", (sid,)).fetchone() is None
            ):
                conn.execute("DELETE FROM series WHERE id = ?", (sid,))  # no point left at all
                self._pop(self._ids, (device_id, key))
                self._pop(self._units, sid)
                self._pop(self._types, sid)
        return total

    def _delete_compacted(
        self, conn: sqlite3.Connection, sid: int, first: int, last: int, count: int, lo: int, hi: int
    ) -> int:
        """Delete a series' compacted points in [lo, hi] and refresh its catalogue row."""
        a, b = max(lo, first), min(hi, last)
        deleted = 0
        for chunk in chunks_between(self.chunks, a, b, self.chunk_ms):
            sql = f"DELETE FROM {table(chunk)} WHERE s = ? AND ts BETWEEN ? AND ?"
            if n := conn.execute(sql, (sid, a, b)).rowcount:
                deleted += n
                self._changed.add(chunk)
        if not deleted:
            return 0
        if deleted >= count:
            conn.execute(_CLEAR_SERIES, (sid,))
            self._pop(self._last, sid)
            return deleted
        if a == first:
            first = self._edge(conn, sid, first, last, desc=False)[0]
        conn.execute("UPDATE series SET count = count - ?, first_ts = ? WHERE id = ?", (deleted, first, sid))
        if b == last:
            ts, t, v = self._edge(conn, sid, first, last, desc=True)
            conn.execute(
                "UPDATE series SET last_ts = ?, last_t = ?, last_v = ? WHERE id = ?", (ts, t, v, sid)
            )
            self._put(self._last, sid, ts)
        return deleted

    def _edge(
        self, conn: sqlite3.Connection, sid: int, first: int, last: int, *, desc: bool
    ) -> tuple[Any, ...]:
        """The (ts, t, v) of the oldest (or newest) compacted point of a series within [first, last]."""
        chunks = chunks_between(self.chunks, first, last, self.chunk_ms)
        order = "DESC" if desc else "ASC"
        for chunk in reversed(chunks) if desc else chunks:
            sql = f"SELECT ts, t, v FROM {table(chunk)} WHERE s = ? ORDER BY ts {order} LIMIT 1"
            row = conn.execute(sql, (sid,)).fetchone()
            if row is not None:
                return tuple(row)
        raise RuntimeError(f"series {sid} has no points left although its count is positive")
