"""SQLite store of a run: the resolved spec, every trial with its state, values and timings, and the
final trainings of the exported models."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from nago_spec.errors import StoreError

SCHEMA_VERSION = 4
#: The trial columns TrialRecord is read from, in its order.
_TRIAL_COLUMNS = ("id", "state", "params", "values", "samples", "error", "host", "created", "started", "finished",
                  "attempts", "config", "bracket", "rung", "budget", "device", "fallback")
#: Columns each schema version added to ``trials``; older stores are migrated on open.
_ADDED_COLUMNS = {2: ("config INTEGER", "bracket INTEGER", "rung INTEGER", "budget REAL"), 3: ("device TEXT",),
                  4: ("fallback TEXT",)}


class TrialState(str, Enum):
    PENDING = "PENDING"  # proposed, not started (or re-queued after a crash)
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"


class _Rows(list):
    """A statement's rows, read at once (so that a damaged page fails inside _Guarded, not later)."""

    def fetchone(self) -> Any:
        return self[0] if self else None

    def fetchall(self) -> list[Any]:
        return list(self)


class _Guarded:
    """The store's SQLite connection, whose errors are one-line StoreErrors naming the file: a damaged or
    foreign study.db says so and how to start over, instead of ending in a sqlite3 traceback."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self._conn, self._path = conn, path

    def execute(self, sql: str, args: Any = ()) -> _Rows:
        try:
            return _Rows(self._conn.execute(sql, args).fetchall())
        except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
            if type(exc) not in (sqlite3.OperationalError, sqlite3.DatabaseError):
                raise  # a constraint or a programming error: the caller's, not the file's
            raise self._error(exc) from None

    def executemany(self, sql: str, rows: Any) -> None:
        try:
            self._conn.executemany(sql, rows)
        except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
            if type(exc) not in (sqlite3.OperationalError, sqlite3.DatabaseError):
                raise  # a constraint or a programming error: the caller's, not the file's
            raise self._error(exc) from None

    def close(self) -> None:
        self._conn.close()

    def _error(self, exc: sqlite3.DatabaseError) -> StoreError:
        if isinstance(exc, sqlite3.OperationalError):  # locked, read-only, disk full: the file is fine
            text = str(exc)
            if "full" in text or "disk I/O" in text:
                return StoreError(f"{self._path}: {text} (is the disk full?); what the store holds is kept: free "
                                  "some space and run the same command again to resume")
            if "readonly" in text or "read-only" in text:
                return StoreError(f"{self._path}: {text}; the run directory cannot be written here")
            return StoreError(f"{self._path}: {text}")
        return StoreError(f"{self._path}: not a readable nago-spec store ({exc}); move it away, or start over "
                          "with --force-new")


@dataclass(frozen=True)
class Outcome:
    """What became of one job, as it goes from the worker to the store and the strategy: a trial's
    objective ``values`` and per-architecture ``samples``, or a final model's manifest ``entry``,
    when it completed; its ``error`` when it failed; and the ``host`` and ``device`` it ran on, where
    a worker answered."""

    values: dict[str, float] | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    entry: dict[str, Any] | None = None
    error: str | None = None
    host: str | None = None
    device: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, error: str, host: str | None = None, device: str | None = None) -> Outcome:
        return cls(error=error, host=host, device=device)


@dataclass(frozen=True)
class TrialRecord:
    """One trial as stored. ``values`` maps objective name to value (None unless COMPLETE)."""

    id: int
    state: TrialState
    params: dict[str, Any]
    values: dict[str, float] | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    host: str | None = None  # where the last attempt ran: the worker's host once it finished
    created: float | None = None
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    #: multi-fidelity runs only: the trial that first proposed these params (its own id for a new
    #: configuration, the promoted trial's config for a promotion), the Hyperband bracket and rung,
    #: and the training budget (epochs or data fraction) this evaluation used
    config: int | None = None
    bracket: int | None = None
    rung: int | None = None
    budget: float | None = None
    #: the device the last attempt trained on, as its worker reported it ("cpu", "cuda:<GPU id>", ...)
    device: str | None = None
    #: why this trial's point is a stand-in for the strategy's own proposal (bo's model failed and a
    #: random point was taken), None when it is the strategy's
    fallback: str | None = None

    @property
    def seconds(self) -> float | None:
        """Wall time of the last attempt in seconds."""
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started


def _dumps(obj: Any) -> str:
    # NaN/inf are not JSON; a stored value is always finite (the evaluator guarantees it)
    return json.dumps(obj, sort_keys=True, allow_nan=False)


def _read_only(path: Path) -> sqlite3.Connection:
    """A connection that reads ``path`` and never writes it (``query_only``). Where the directory can be
    written it is an ordinary connection, which as the last one to close tidies the write-ahead log's
    side files away. Where it cannot (a read-only file system, another user's run), SQLite cannot make
    the shared-memory index WAL mode needs even to read, and the store is read as immutable: exact for
    a run that has ended (its last connection folded the log into the file), while the last trials of
    a run that was killed may be missed."""
    if os.access(path.parent, os.W_OK):
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA query_only = ON")
        return conn
    uri = path.resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
    except sqlite3.OperationalError:  # "unable to open database file": no index can be made here
        conn.close()
        conn = sqlite3.connect(uri + "&immutable=1", uri=True, timeout=30.0, isolation_level=None)
    except sqlite3.DatabaseError:
        pass  # a damaged file: the first query through _Guarded says so, in one line
    return conn


class Store:
    """A run's ``study.db``: WAL mode, one transaction per state change.

    A crash at any point loses at most the trials that were RUNNING; ``requeue_running`` puts them
    back to PENDING on resume.
    """

    def __init__(self, path: Path | str, readonly: bool = False):
        """Open (or create) the store at ``path``. ``readonly``: only read an existing store, writing
        nothing, not even SQLite's side files where the directory cannot be written (status, report,
        warm start, on a read-only file system or another user's run)."""
        self.path = Path(path)
        self._select: str | None = None  # trials()'s SELECT, for the columns this store has
        if self.path.is_file() and self.path.stat().st_size == 0:  # sqlite would take it for a new, empty run
            raise StoreError(f"{self.path}: the store is empty (0 bytes): this run's trials are lost, or it never "
                             "stored one; move it away, or start over with --force-new")
        if readonly:
            if not self.path.is_file():
                raise StoreError(f"{self.path}: no such store")
            self._conn = _Guarded(_read_only(self.path), self.path)
            try:
                version = self._read_version()
            except StoreError:
                self._conn.close()
                raise
            if version >= SCHEMA_VERSION or not os.access(self.path.parent, os.W_OK):
                return  # (an older schema that cannot be migrated here: its missing columns read as None)
            self._conn.close()  # an older schema is migrated once, where it can be written
        self._conn = _Guarded(sqlite3.connect(self.path, timeout=30.0, isolation_level=None), self.path)
        try:
            self._open()
        except StoreError:
            self._conn.close()
            raise

    def _read_version(self) -> int:
        """The schema version of a store opened read-only; StoreError for an SQLite file of another kind."""
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"meta", "trials"} <= tables:
            raise StoreError(f"{self.path}: not a nago-spec store (an SQLite file without its tables); move it "
                             "away, or start over with --force-new")
        version = int(self.get_meta("schema_version") or SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: store schema {version}, this nago-spec reads up to {SCHEMA_VERSION}")
        return version

    def _open(self) -> None:
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self._tx() as c:
            c.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            c.execute(
                """CREATE TABLE IF NOT EXISTS trials (
                    id INTEGER PRIMARY KEY,
                    state TEXT NOT NULL,
                    params TEXT NOT NULL,
                    "values" TEXT,
                    samples TEXT NOT NULL DEFAULT '[]',
                    error TEXT,
                    host TEXT,
                    created REAL,
                    started REAL,
                    finished REAL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    config INTEGER,
                    bracket INTEGER,
                    rung INTEGER,
                    budget REAL,
                    device TEXT,
                    fallback TEXT)"""
            )
            c.execute(
                """CREATE TABLE IF NOT EXISTS finals (
                    trial INTEGER NOT NULL,
                    sample INTEGER NOT NULL,
                    key TEXT NOT NULL,
                    state TEXT NOT NULL,
                    entry TEXT,
                    error TEXT,
                    finished REAL,
                    PRIMARY KEY (trial, sample))"""
            )
            c.execute("CREATE TABLE IF NOT EXISTS lost (job TEXT PRIMARY KEY, workers INTEGER NOT NULL)")
            c.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        version = int(self.get_meta("schema_version") or SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: store schema {version}, this nago-spec reads up to {SCHEMA_VERSION}")
        if version < SCHEMA_VERSION:
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        """Bring a store of an older schema up to SCHEMA_VERSION in one transaction (columns only added)."""
        with self._tx() as c:
            present = {r[1] for r in c.execute("PRAGMA table_info(trials)")}
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for column in _ADDED_COLUMNS.get(v, ()):
                    if column.split()[0] not in present:
                        c.execute(f"ALTER TABLE trials ADD COLUMN {column}")
            c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta ------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- trials ----------------------------------------------------------------------------------
    def add_trials(
        self, first_id: int, params: list[Mapping[str, Any]], rungs: list[Mapping[str, Any]] | None = None,
        fallbacks: Mapping[int, str] | None = None,
    ) -> list[int]:
        """Insert PENDING trials ``first_id, first_id + 1, ...`` in one transaction.

        ``rungs`` (multi-fidelity runs) gives each trial's ``config``, ``bracket``, ``rung`` and
        ``budget``; a ``config`` of None means the trial's own id (a new configuration).
        ``fallbacks``: trial id -> why its point stands in for the strategy's own proposal.
        """
        fallbacks = fallbacks or {}
        now = time.time()
        ids = list(range(first_id, first_id + len(params)))
        rungs = rungs if rungs is not None else [{}] * len(params)
        if len(rungs) != len(params):
            raise ValueError(f"add_trials: {len(params)} params but {len(rungs)} rungs")
        rows = []
        for i, p, r in zip(ids, params, rungs):
            config = r.get("config")
            rows.append((i, TrialState.PENDING.value, _dumps(dict(p)), now,
                         (i if config is None else config) if r else None, r.get("bracket"), r.get("rung"),
                         r.get("budget"), fallbacks.get(i)))
        with self._tx() as c:
            c.executemany(
                "INSERT INTO trials (id, state, params, created, config, bracket, rung, budget, fallback)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return ids

    def mark_running(self, trial_id: int, host: str) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE trials SET state = ?, host = ?, started = ?, finished = NULL,"
                " attempts = attempts + 1 WHERE id = ?",
                (TrialState.RUNNING.value, host, time.time(), trial_id),
            )

    def complete(self, trial_id: int, values: Mapping[str, float], samples: list[dict[str, Any]],
                 host: str | None = None, device: str | None = None) -> None:
        """Record a finished trial; ``host`` and ``device``, where the worker really ran it, replace
        the host mark_running recorded (None keeps it)."""
        for name, v in values.items():
            if not math.isfinite(v):
                raise StoreError(f"trial {trial_id}: objective {name!r} is not finite ({v})")
        with self._tx() as c:
            c.execute(
                'UPDATE trials SET state = ?, "values" = ?, samples = ?, error = NULL, finished = ?,'
                " host = COALESCE(?, host), device = COALESCE(?, device) WHERE id = ?",
                (TrialState.COMPLETE.value, _dumps(dict(values)), _dumps(samples), time.time(), host, device,
                 trial_id),
            )

    def fail(self, trial_id: int, error: str, host: str | None = None, device: str | None = None) -> None:
        """Record a failed trial (``host`` and ``device`` as for complete)."""
        with self._tx() as c:
            c.execute(
                "UPDATE trials SET state = ?, error = ?, finished = ?, host = COALESCE(?, host),"
                " device = COALESCE(?, device) WHERE id = ?",
                (TrialState.FAILED.value, error, time.time(), host, device, trial_id),
            )

    def finish(self, trial_id: int, outcome: Outcome) -> None:
        """Record a trial's outcome: complete with its values, or failed with its error."""
        if outcome.ok:
            self.complete(trial_id, outcome.values or {}, outcome.samples, outcome.host, outcome.device)
        else:
            self.fail(trial_id, outcome.error or "failed", outcome.host, outcome.device)

    def requeue(self, trial_id: int, reason: str) -> None:
        """Put one RUNNING trial back to PENDING (its worker died), keeping ``reason`` as its error text
        until it finishes."""
        with self._tx() as c:
            c.execute(
                "UPDATE trials SET state = ?, error = ?, started = NULL WHERE id = ?",
                (TrialState.PENDING.value, reason, trial_id),
            )

    def requeue_running(self) -> list[int]:
        """Put trials left RUNNING by a dead process back to PENDING; returns their ids."""
        with self._tx() as c:
            ids = [r[0] for r in c.execute("SELECT id FROM trials WHERE state = ?", (TrialState.RUNNING.value,))]
            c.execute(
                "UPDATE trials SET state = ?, started = NULL WHERE state = ?",
                (TrialState.PENDING.value, TrialState.RUNNING.value),
            )
        return ids

    def trials(self, state: TrialState | None = None) -> list[TrialRecord]:
        """Every trial (or those in ``state``), ordered by id."""
        if self._select is None:  # once per connection: trials() runs after every trial
            present = {r[1] for r in self._conn.execute("PRAGMA table_info(trials)")}
            # a column an older schema lacks (a store read where it could not be migrated) reads as NULL
            self._select = ("SELECT " + ", ".join(f'"{c}"' if c in present else "NULL" for c in _TRIAL_COLUMNS)
                            + " FROM trials")
        sql = self._select
        args: tuple[Any, ...] = ()
        if state is not None:
            sql += " WHERE state = ?"
            args = (state.value,)
        rows = self._conn.execute(sql + " ORDER BY id", args).fetchall()
        return [
            TrialRecord(
                id=r[0],
                state=TrialState(r[1]),
                params=json.loads(r[2]),
                values=None if r[3] is None else json.loads(r[3]),
                samples=json.loads(r[4]),
                error=r[5],
                host=r[6],
                created=r[7],
                started=r[8],
                finished=r[9],
                attempts=r[10],
                config=r[11],
                bracket=r[12],
                rung=r[13],
                budget=r[14],
                device=r[15],
                fallback=r[16],
            )
            for r in rows
        ]

    # -- final training --------------------------------------------------------------------------
    def save_final(self, trial_id: int, sample: int, key: str, entry: Mapping[str, Any] | None,
                   error: str | None = None) -> None:
        """Record one finished final training: its manifest ``entry`` (COMPLETE) or ``error`` (FAILED).

        ``key`` identifies the final-training settings; rows of another key are stale.
        """
        state = TrialState.COMPLETE if entry is not None else TrialState.FAILED
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO finals VALUES (?, ?, ?, ?, ?, ?, ?)",
                (trial_id, sample, key, state.value, None if entry is None else _dumps(dict(entry)), error,
                 time.time()),
            )

    def finals(self, key: str) -> dict[tuple[int, int], dict[str, Any]]:
        """``(trial, sample) -> {"state", "entry", "error"}`` of the final trainings done under ``key``."""
        rows = self._conn.execute(
            "SELECT trial, sample, state, entry, error FROM finals WHERE key = ? ORDER BY trial, sample", (key,)
        ).fetchall()
        return {
            (r[0], r[1]): {"state": TrialState(r[2]), "entry": None if r[3] is None else json.loads(r[3]),
                           "error": r[4]}
            for r in rows
        }

    def clear_finals(self) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM finals")

    # -- lost workers ----------------------------------------------------------------------------
    def lost_workers(self, job: str) -> int:
        """How many workers died under ``job`` (a trial, a final training), over every session."""
        row = self._conn.execute("SELECT workers FROM lost WHERE job = ?", (job,)).fetchone()
        return 0 if row is None else int(row[0])

    def add_lost_worker(self, job: str) -> int:
        """Count one more worker dead under ``job``; returns the count."""
        with self._tx() as c:
            c.execute("INSERT INTO lost VALUES (?, 1) ON CONFLICT(job) DO UPDATE SET workers = workers + 1", (job,))
        return self.lost_workers(job)

    def next_trial_id(self) -> int:
        row = self._conn.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM trials").fetchone()
        return int(row[0])
