"""Resume after kill -9 (issue 6): a run killed with SIGKILL several times mid-trial and resumed ends
with the same trials as an uninterrupted run with the same seed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import kill_run_at, params_spec

from nago_spec.store import Store, TrialState
from nago_spec.runners.run import RunOptions, run

BUDGET = 18
KILL_AT = (3, 8, 13)  # COMPLETE trials in the store when each of the three kills lands

SLOW_ZDT1 = """
import math
import time


def zdt1(params):
    time.sleep(0.05)  # long enough for a kill to land while a trial is RUNNING
    x = [params[k] for k in sorted(params)]
    g = 1.0 + 9.0 * sum(x[1:]) / (len(x) - 1)
    return {"f1": x[0], "f2": g * (1.0 - math.sqrt(x[0] / g))}
"""

OPTIONS = {
    "bo": "pop_size = 16\ngenerations = 6\nrestarts = 2\nfit_iters = 30",
    "evolution": "pop_size = 8",
}


def _spec(tmp_path: Path, strategy: str, backend: str, workers: int) -> Path:
    return params_spec(tmp_path / f"resume_{strategy}_{backend}.toml", SLOW_ZDT1, "zdt1", f"""
        [search]
        strategy = "{strategy}"
        budget = {BUDGET}
        initial = 5
        batch = 2
        [search.options]
    """ + OPTIONS[strategy] + f"""
        [run]
        backend = "{backend}"
        workers = {workers}
    """, params=("x1", "x2", "x3"), seed=3)


def _kill_mid_trial(spec: Path, out: Path, k: int) -> list[int]:
    """``nago run`` SIGKILLed once ``k`` trials are COMPLETE and one is RUNNING; returns the ids the
    kill left RUNNING."""
    kill_run_at(spec, out, k)
    with Store(out / "study.db") as s:
        return [t.id for t in s.trials(TrialState.RUNNING)]


def _killed_three_times_then_resumed(spec: Path, out: Path) -> tuple[list, list[list[int]]]:
    left_running, walls = [], []
    for k in KILL_AT:
        left_running.append(_kill_mid_trial(spec, out, k))
        with Store(out / "study.db") as s:
            walls.append(float(s.get_meta("wall_seconds") or 0.0))
    run(spec, RunOptions(out=out, mode="quiet"))
    with Store(out / "study.db") as s:
        walls.append(float(s.get_meta("wall_seconds")))
        trials = s.trials()
    # each killed session's time is kept (saved as trials finish), so the run's wall time only grows
    assert 0 < walls[0] < walls[1] < walls[2] < walls[3], walls
    return trials, left_running


def _record(t) -> tuple:
    """What a trial is, less its timings, host and attempts."""
    return (t.id, t.state, t.params, t.values, t.samples, t.error)


def _check_complete_and_unique(trials: list) -> None:
    assert [t.id for t in trials] == list(range(BUDGET))  # none lost, none twice
    assert all(t.state is TrialState.COMPLETE for t in trials)
    points = [tuple(t.params[k] for k in sorted(t.params)) for t in trials]
    assert len(set(points)) == BUDGET  # no point proposed twice (a re-queued trial is not re-proposed)
    for t in trials:  # each value is the objective of its own params (not of another trial's)
        x = [t.params[k] for k in sorted(t.params)]
        g = 1.0 + 9.0 * sum(x[1:]) / (len(x) - 1)
        assert t.values == {"f1": x[0], "f2": g * (1.0 - math.sqrt(x[0] / g))}


def _check_requeued(trials: list, left_running: list[list[int]]) -> None:
    """Every trial a kill left RUNNING was re-queued and run again to completion."""
    assert all(left_running), left_running  # each kill landed mid-trial
    by_id = {t.id: t for t in trials}
    for ids in left_running:
        for i in ids:
            assert by_id[i].state is TrialState.COMPLETE and by_id[i].attempts >= 2


@pytest.mark.parametrize("strategy", ["bo", "evolution"])
def test_killed_and_resumed_run_equals_uninterrupted_run_local(tmp_path, strategy):
    """Local backend: one trial at a time, so the strategy is told in id order and asked at the same
    points in both runs; the stored trials must be identical (params and values as exact floats)."""
    spec = _spec(tmp_path, strategy, "local", 1)
    run(spec, RunOptions(out=tmp_path / "straight", mode="quiet"))
    with Store(tmp_path / "straight" / "study.db") as s:
        straight = s.trials()
    resumed, left_running = _killed_three_times_then_resumed(spec, tmp_path / "killed")

    _check_complete_and_unique(resumed)
    _check_requeued(resumed, left_running)
    assert [_record(t) for t in resumed] == [_record(t) for t in straight]


def test_killed_and_resumed_run_loses_nothing_process_backend(tmp_path):
    """Process backend, 2 workers: which trial finishes first varies from run to run, so what the
    strategy knows (told vs pending) at each ask varies, and two runs, killed or not, need not propose
    the same points after the initial design. So this compares what must hold regardless: trials
    0..budget-1 each once, all COMPLETE, each point distinct, each value that of its own params, trials
    left RUNNING re-queued and completed, and the seeded initial design identical to a local run's."""
    spec = _spec(tmp_path, "bo", "process", 2)
    resumed, left_running = _killed_three_times_then_resumed(spec, tmp_path / "killed")

    _check_complete_and_unique(resumed)
    _check_requeued(resumed, left_running)
    (tmp_path / "local").mkdir()
    local = _spec(tmp_path / "local", "bo", "local", 1)
    run(local, RunOptions(out=tmp_path / "local" / "run", budget=5, mode="quiet"))
    with Store(tmp_path / "local" / "run" / "study.db") as s:
        initial = s.trials()
    assert [_record(t) for t in resumed[:5]] == [_record(t) for t in initial]
