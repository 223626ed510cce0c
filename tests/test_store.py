"""The SQLite store: states, transactions, re-queue after a crash, reopen."""

from __future__ import annotations

import math
import sqlite3

import pytest

from nago_spec.errors import StoreError
from nago_spec.store import SCHEMA_VERSION, Store, TrialState


def test_trial_lifecycle_and_reopen(tmp_path):
    db = tmp_path / "study.db"
    with Store(db) as s:
        assert s.next_trial_id() == 0
        assert s.add_trials(0, [{"a": 1}, {"a": 2}, {"a": 3}]) == [0, 1, 2]
        s.mark_running(0, "h")
        s.complete(0, {"error": 0.1, "params": 1000.0}, [{"sample": 0, "seed": 5}])
        s.mark_running(1, "h")
        s.fail(1, "boom")
        s.mark_running(2, "h")
        s.set_meta("k", "v")
    with Store(db) as s:  # everything survives a reopen
        t = {r.id: r for r in s.trials()}
        assert t[0].state is TrialState.COMPLETE and t[0].values == {"error": 0.1, "params": 1000.0}
        assert t[0].samples == [{"sample": 0, "seed": 5}] and t[0].seconds >= 0
        assert t[1].state is TrialState.FAILED and t[1].error == "boom" and t[1].values is None
        assert t[2].state is TrialState.RUNNING and t[2].attempts == 1
        assert s.get_meta("k") == "v" and s.next_trial_id() == 3
        assert s.requeue_running() == [2]
        assert [r.id for r in s.trials(TrialState.PENDING)] == [2]
        s.mark_running(2, "h")
        assert s.trials(TrialState.RUNNING)[0].attempts == 2


def test_non_finite_value_is_refused(tmp_path):
    with Store(tmp_path / "study.db") as s:
        s.add_trials(0, [{}])
        with pytest.raises(StoreError, match="not finite"):
            s.complete(0, {"error": math.nan}, [])
        assert s.trials()[0].state is TrialState.PENDING


def test_failed_transaction_leaves_nothing(tmp_path):
    with Store(tmp_path / "study.db") as s:
        s.add_trials(0, [{}, {}])
        with pytest.raises(sqlite3.IntegrityError):
            s.add_trials(1, [{}, {}])  # id 1 exists: id 2 must not be inserted either
        assert [t.id for t in s.trials()] == [0, 1]


def test_wal_mode(tmp_path):
    with Store(tmp_path / "study.db") as s:
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_rungs_are_stored_and_a_new_config_is_its_own(tmp_path):
    with Store(tmp_path / "s.db") as store:
        store.add_trials(0, [{"x": 1}, {"x": 2}], [{"bracket": 0, "rung": 0, "budget": 30.0}] * 2)
        store.add_trials(2, [{"x": 1}], [{"config": 0, "bracket": 0, "rung": 1, "budget": 60.0}])
        store.add_trials(3, [{"x": 3}])  # a single-fidelity trial: no rung
        t = store.trials()
        assert [(r.config, r.bracket, r.rung, r.budget) for r in t] == [
            (0, 0, 0, 30.0), (1, 0, 0, 30.0), (0, 0, 1, 60.0), (None, None, None, None)]


def _schema_1_store(db):
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.execute('CREATE TABLE trials (id INTEGER PRIMARY KEY, state TEXT NOT NULL, params TEXT NOT NULL, '
                 '"values" TEXT, samples TEXT NOT NULL DEFAULT \'[]\', error TEXT, host TEXT, created REAL, '
                 'started REAL, finished REAL, attempts INTEGER NOT NULL DEFAULT 0)')
    conn.execute("""INSERT INTO trials (id, state, params, "values") VALUES (0, 'COMPLETE', '{"x": 1}', '{"f": 2.0}')""")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("readonly", [False, True])
def test_a_schema_1_store_is_migrated_and_keeps_its_trials(tmp_path, readonly):
    """Also when first opened to be read (status, a warm start), where the directory can be written."""
    db = tmp_path / "old.db"
    _schema_1_store(db)
    with Store(db, readonly=readonly) as store:
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
        (t,) = store.trials()
        assert (t.params, t.values, t.budget, t.config, t.device) == ({"x": 1}, {"f": 2.0}, None, None, None)
    with Store(db) as store:  # opening again is a no-op
        assert len(store.trials()) == 1


def test_an_old_store_that_cannot_be_migrated_is_read_as_it_is(tmp_path, monkeypatch):
    """A schema-1 run in a directory this process cannot write (an archive): read, its missing
    columns as None, and left as it was."""
    db = tmp_path / "old.db"
    _schema_1_store(db)
    data = db.read_bytes()
    monkeypatch.setattr("nago_spec.store.os.access", lambda path, mode: False)
    with Store(db, readonly=True) as store:
        assert store.get_meta("schema_version") == "1"
        (t,) = store.trials()
        assert (t.params, t.values, t.device, t.fallback) == ({"x": 1}, {"f": 2.0}, None, None)
    assert db.read_bytes() == data


def test_the_worker_s_host_and_device_replace_the_parent_s(tmp_path):
    with Store(tmp_path / "s.db") as store:
        store.add_trials(0, [{"x": 1}, {"x": 2}, {"x": 3}])
        for i in range(3):
            store.mark_running(i, host="parent")
        store.complete(0, {"f": 1.0}, [], host="node-7", device="cuda:3")
        store.fail(1, "boom", host="node-8", device="cuda:GPU-5f2c")
        store.complete(2, {"f": 2.0}, [])  # no answer from a worker (a lost one): the parent's host stays
        t = store.trials()
    assert [(r.host, r.device) for r in t] == [("node-7", "cuda:3"), ("node-8", "cuda:GPU-5f2c"), ("parent", None)]


def test_reading_a_store_writes_nothing_and_refuses_a_foreign_sqlite_file(tmp_path):
    db = tmp_path / "study.db"
    with Store(db) as store:
        store.add_trials(0, [{"x": 1}])
    before = sorted(p.name for p in tmp_path.iterdir())
    with Store(db, readonly=True) as store:
        assert [t.params for t in store.trials()] == [{"x": 1}]
        with pytest.raises(StoreError, match="attempt to write a readonly database; the run directory cannot be "
                                             "written here"):
            store.set_meta("k", "v")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.commit()
    conn.close()
    data = foreign.read_bytes()
    with pytest.raises(StoreError, match="not a nago-spec store"):
        Store(foreign, readonly=True)
    assert foreign.read_bytes() == data
    with pytest.raises(StoreError, match="no such store"):
        Store(tmp_path / "missing.db", readonly=True)
