"""Backends (issue 6): a call that raises, hangs past its limit, or loses its worker, on the process
pool, in-process and on a local Ray instance; and the same three through a whole run."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from concurrent.futures import wait

import pytest

from nago_spec.store import Store, TrialState
from nago_spec.device import Binding
from nago_spec.runners.backends import LocalBackend, ProcessBackend, TrialTimeout, WorkerLost, WorkerStartFailed
from nago_spec.runners.run import RunOptions, run

from conftest import params_spec


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def fails() -> None:
    raise ValueError("bad trial")


def hangs() -> None:
    time.sleep(600)


def spins() -> None:  # pure Python, no sleeping: what the in-process alarm must interrupt
    while True:
        pass


def deaf_hang() -> None:  # blocks SIGALRM: only killing the worker stops it
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(600)


def dies() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def threads() -> int:
    import torch

    return torch.get_num_threads()


@pytest.fixture(scope="module")
def pool():
    backend = ProcessBackend(2)
    yield backend
    backend.close()


def _check_failures(backend, hang=hangs) -> None:
    with pytest.raises(ValueError, match="bad trial"):
        backend.submit(fails).result()
    with pytest.raises(TrialTimeout, match="time limit of 1 s"):
        backend.submit(hang, timeout=1.0).result(timeout=60)
    assert backend.submit(pid_after, 0.0).result(timeout=60) > 0  # still serving


def test_process_backend_runs_in_parallel_in_one_thread_each(pool):
    futures = [pool.submit(pid_after, 0.5) for _ in range(4)]
    wait(futures, timeout=60)
    assert len({f.result() for f in futures}) == 2  # both workers took calls
    assert pool.submit(threads).result() == 1


def test_process_backend_failures_are_the_calls_own(pool):
    _check_failures(pool)


def test_process_backend_replaces_a_killed_worker_and_fails_only_its_call(pool):
    slow = pool.submit(pid_after, 2.0)  # on the other worker: must survive the death beside it
    doomed = pool.submit(dies)
    with pytest.raises(WorkerLost, match="killed by SIGKILL"):
        doomed.result(timeout=60)
    assert slow.result(timeout=60) > 0
    futures = [pool.submit(pid_after, 0.2) for _ in range(2)]
    assert all(f.result(timeout=60) > 0 for f in futures)  # the pool is back at two workers


def test_process_backend_timeout_kills_only_the_hanging_worker(pool):
    before = {w.process.pid for w in pool._pool}
    hung = pool.submit(hangs, timeout=0.5)
    other = pool.submit(pid_after, 1.5)
    with pytest.raises(TrialTimeout):
        hung.result(timeout=60)
    assert other.result(timeout=60) > 0
    after = {w.process.pid for w in pool._pool}
    assert len(after) == 2 and len(before & after) == 1  # one worker replaced, the other kept


def test_process_backend_gives_up_on_workers_that_cannot_start():
    """A worker whose set-up raises (here: a CUDA_VISIBLE_DEVICES no environment can hold) was started
    again forever; after START_TRIES it fails every call, queued or later, with the set-up's error."""
    with ProcessBackend(bindings=[Binding("cpu", "0\0")]) as pool:
        queued = pool.submit(pid_after, 0)
        with pytest.raises(WorkerStartFailed, match=r"could not start \(3 tries\): ValueError: embedded null byte"):
            queued.result(timeout=60)
        with pytest.raises(WorkerStartFailed):
            pool.submit(pid_after, 0).result(timeout=1)
        assert all(w.gone for w in pool._pool)


def test_local_backend_time_limit_interrupts_python_code():
    backend = LocalBackend()
    with pytest.raises(ValueError, match="bad trial"):
        backend.submit(fails).result()
    with pytest.raises(TrialTimeout):
        backend.submit(spins, timeout=0.3).result()
    assert backend.submit(pid_after, 0.0).result() == os.getpid()


CHAOS = '''
import fcntl
import os
import signal
import time
from pathlib import Path


def _call_number() -> int:
    """1, 2, 3, ... across every worker process (a counter file under an exclusive lock)."""
    path = Path(__file__).with_name("calls.txt")
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        n = len(f.read().split()) + 1
        f.write(f"{n}\\n")
    return n


def chaos(params):
    n = _call_number()
    if n == 1:
        raise ValueError("the first call raises")
    if n == 2:
        time.sleep(600)
    if n == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"f1": params["x1"], "f2": 1.0 - params["x1"]}
'''


def _chaos_spec(tmp_path, backend: str, workers: int, max_retries: int = 1):
    (tmp_path / "chaos.py").write_text(CHAOS)
    path = tmp_path / "chaos.toml"
    path.write_text(textwrap.dedent(f"""
        version = 1
        name = "chaos"
        seed = 1
        [space]
        kind = "params"
        [space.params]
        x1 = {{ type = "float", low = 0.0, high = 1.0 }}
        [[objectives]]
        name = "f1"
        callable = "chaos.py:chaos"
        [[objectives]]
        name = "f2"
        callable = "chaos.py:chaos"
        [search]
        strategy = "random"
        budget = 7
        batch = 2
        [run]
        backend = "{backend}"
        workers = {workers}
        trial_timeout = 4
        max_retries = {max_retries}
    """))
    return path


def _states(out):
    with Store(out / "study.db") as s:
        return s.trials()


def test_run_records_a_raising_a_hanging_and_a_killed_trial_and_goes_on(tmp_path):
    """Process backend: call 1 raises, call 2 hangs past the 4 s limit, call 3 SIGKILLs its worker.
    The first two are FAILED with their reasons; the third is re-queued once and completes."""
    out = tmp_path / "run"
    run(_chaos_spec(tmp_path, "process", 2), RunOptions(out=out, mode="quiet"))
    trials = _states(out)
    assert len(trials) == 7
    failed = [t for t in trials if t.state is TrialState.FAILED]
    raised, timed_out = sorted((t.error for t in failed), key=lambda e: e.startswith("exceeded"))
    assert raised.startswith("objective 'f1' (") and raised.endswith("raised ValueError: the first call raises")
    assert timed_out == "exceeded the trial time limit of 4 s; its worker was killed"
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    assert len(complete) == 5
    retried = [t for t in complete if t.attempts == 2]
    assert len(retried) == 1 and retried[0].error is None
    assert len((tmp_path / "calls.txt").read_text().split()) == 8  # 7 trials + 1 retry


def test_run_fails_a_trial_whose_worker_dies_more_than_max_retries(tmp_path):
    out = tmp_path / "run"
    run(_chaos_spec(tmp_path, "process", 1, max_retries=0), RunOptions(out=out, mode="quiet"))
    trials = _states(out)
    died = [t for t in trials if t.state is TrialState.FAILED and "died" in t.error]
    assert len(died) == 1
    assert "killed by SIGKILL" in died[0].error and "max_retries = 0" in died[0].error
    assert sum(t.state is TrialState.COMPLETE for t in trials) == 4


# -- Ray -------------------------------------------------------------------------------------------


def test_the_time_limit_does_not_count_a_fresh_workers_start_up():
    """A spawned worker imports torch before its first call (about a second, more on a busy machine):
    a 0.5 s limit on a 0.1 s call must still pass. (time.sleep: a function of this module would be
    imported, with torch, by the call itself.)"""
    with ProcessBackend(1) as fresh:
        assert fresh.submit(time.sleep, 0.1, timeout=0.5).result(timeout=120) is None


@pytest.fixture(scope="module")
def ray_backend():
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'nago-spec[ray]')")
    import ray.cloudpickle

    from nago_spec.runners.backends import RayBackend

    # Ray workers do not share pytest's sys.path: send this module's helpers by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    backend = RayBackend(2, num_cpus=1)
    yield backend
    backend.close()


def test_ray_backend_runs_calls_in_parallel_and_reports_failures(ray_backend):
    futures = [ray_backend.submit(pid_after, 0.5) for _ in range(4)]
    wait(futures, timeout=120)
    assert len({f.result() for f in futures}) == 2
    assert ray_backend.submit(threads).result(timeout=60) == 1
    _check_failures(ray_backend)


def test_ray_backend_kills_a_call_its_alarm_cannot_stop(ray_backend, monkeypatch):
    monkeypatch.setattr(ray_backend, "HARD_LIMIT_GRACE", 1.0)
    with pytest.raises(TrialTimeout, match="its worker was killed"):
        ray_backend.submit(deaf_hang, timeout=1.0).result(timeout=120)
    assert ray_backend.submit(pid_after, 0.0).result(timeout=120) > 0


def test_ray_backend_worker_death_is_worker_lost(ray_backend):
    with pytest.raises(WorkerLost):
        ray_backend.submit(dies).result(timeout=120)
    assert ray_backend.submit(pid_after, 0.0).result(timeout=120) > 0


def test_run_on_ray_records_failures_like_the_process_backend(tmp_path, ray_backend):
    """The whole run on the Ray instance the fixture started (the run joins it and leaves it up)."""
    out = tmp_path / "run"
    run(_chaos_spec(tmp_path, "ray", 2), RunOptions(out=out, mode="quiet"))
    trials = _states(out)
    assert sum(t.state is TrialState.COMPLETE for t in trials) == 5
    failed = [t.error for t in trials if t.state is TrialState.FAILED]
    raised, timed_out = sorted(failed, key=lambda e: e.startswith("exceeded"))
    assert raised.endswith("raised ValueError: the first call raises")
    assert timed_out == "exceeded the trial time limit of 4 s; the call was interrupted"  # the task's own alarm


def test_the_time_limit_does_not_count_a_workers_warm_up_for_the_run(tmp_path):
    """Issue 20 (3e): a fresh worker's first trial paid for parsing the spec and importing its callables
    (and loading the data), so a short trial_timeout killed healthy trials, again in each replacement.
    The callable here takes 3 s to import and 0 s to run, under a 2 s limit."""
    (tmp_path / "slow_import.py").write_text(textwrap.dedent("""
        import time
        time.sleep(3)

        def f(params):
            return {"f1": params["x1"], "f2": 1 - params["x1"]}
    """))
    spec = tmp_path / "slow.toml"
    spec.write_text(textwrap.dedent("""
        version = 1
        name = "slow"
        [space]
        kind = "params"
        [space.params]
        x1 = { type = "float", low = 0.0, high = 1.0 }
        [[objectives]]
        name = "f1"
        callable = "slow_import.py:f"
        [[objectives]]
        name = "f2"
        callable = "slow_import.py:f"
        [search]
        strategy = "random"
        budget = 3
        [run]
        backend = "process"
        workers = 2
        trial_timeout = 2
    """))
    out = tmp_path / "run"
    run(spec, RunOptions(out=out, mode="quiet"))
    assert [(t.state, t.error) for t in _states(out)] == [(TrialState.COMPLETE, None)] * 3


# -- synchronous runs (issue 20, point 4) -------------------------------------------------------------

UNEVEN = """
import time

def zdt1(params):
    x = [params[k] for k in ("x1", "x2", "x3")]
    time.sleep(0.25 * (1 - x[0]))  # trials finish out of their order on two workers
    g = 1 + 9 * (x[1] + x[2]) / 2
    return {"f1": x[0], "f2": g * (1 - (x[0] / g) ** 0.5)}
"""


def _uneven_spec(tmp_path, backend: str, workers: int, synchronous: bool = True):
    return params_spec(tmp_path / f"uneven_{backend}_{workers}.toml", UNEVEN, "zdt1", f"""
        [search]
        strategy = "bo"
        budget = 10
        initial = 4
        batch = 2
        synchronous = {str(synchronous).lower()}
        [search.options]
        restarts = 1
        [run]
        backend = "{backend}"
        workers = {workers}
    """, params=("x1", "x2", "x3"), seed=5)


def _points(out) -> list[tuple[int, dict, dict]]:
    return [(t.id, t.params, t.values) for t in _states(out)]


def test_a_synchronous_run_on_two_workers_equals_one_worker(tmp_path):
    """The bo strategy, two process workers whose trials finish out of order: with synchronous = true
    the trials are those of one worker, point for point."""
    one, two = tmp_path / "one", tmp_path / "two"
    run(_uneven_spec(tmp_path, "local", 1), RunOptions(out=one, mode="quiet"))  # one worker, in process
    run(_uneven_spec(tmp_path, "process", 2), RunOptions(out=two, mode="quiet"))
    assert len(_points(one)) == 10 and _points(one) == _points(two)
    # and the two workers did run side by side: trials overlap in time
    spans = [(t.started, t.finished) for t in _states(two)]
    assert any(a[0] < b[1] and b[0] < a[1] for a, b in zip(spans, spans[1:]))


def uneven_zdt1(params):
    """UNEVEN's function as a Python objective (sent to Ray's workers by value, as a notebook's is)."""
    time.sleep(0.25 * (1 - params["x1"]))
    g = 1 + 9 * (params["x2"] + params["x3"]) / 2
    return {"f1": params["x1"], "f2": g * (1 - (params["x1"] / g) ** 0.5)}


def test_a_synchronous_study_on_two_ray_workers_equals_one_worker_in_process(tmp_path, ray_backend):
    """A Python function as the objective (Study.optimize(fn)) on the Ray instance the fixture
    started: two Ray workers give the trials of one in-process worker, point for point."""
    from nago_spec import Study
    from nago_spec.spec import Spec, load_spec

    spec = load_spec(_uneven_spec(tmp_path, "ray", 2))
    spec = Spec.from_dict(
        {**spec.to_dict(), "objectives": [{"name": "f1"}, {"name": "f2"}]}, base_dir=tmp_path)
    local = Study.create(spec, tmp_path / "local").optimize(uneven_zdt1, backend="local", workers=1, progress="quiet")
    on_ray = Study.create(spec, tmp_path / "ray").optimize(uneven_zdt1, progress="quiet")
    assert len(local.trials()) == 10
    assert [(t.id, t.params, t.values) for t in on_ray.trials()] == [(t.id, t.params, t.values) for t in local.trials()]


def test_one_retry_policy_settles_trials_and_final_models_alike():
    """Issue 20 (2): the search and the export shared no failure policy (only the search's copy
    caught TrialTimeout); both loops now settle their jobs through Retries."""
    from concurrent.futures import Future

    from nago_spec.runners.run import Retries

    def raised(exc):
        fut = Future()
        fut.set_exception(exc)
        return fut

    r = Retries(1)
    assert r.settle("trial 3", raised(WorkerLost("its worker died"))) == \
        (None, "its worker died; re-queued (1 of 1 retries)")
    out, retry = r.settle("trial 3", raised(WorkerLost("its worker died")))
    assert retry is None and not out.ok and out.error == "its worker died (2 time(s); max_retries = 1)"
    assert r.settle("final trial 3 sample 0", raised(WorkerLost("died")))[0] is None  # counts on its own
    assert r.settle("final trial 3 sample 0", raised(TrialTimeout(4)))[0].error == \
        "exceeded the trial time limit of 4 s; its worker was killed"  # a BaseException: no bare except caught it
    assert r.settle("trial 4", raised(OSError("pipe")))[0].error == "OSError: pipe"
