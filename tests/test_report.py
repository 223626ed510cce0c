"""Reports: the feasibility-aware front, the normalised hypervolume, and the files a run leaves."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from nago_spec.problem import ConstraintInfo, ObjectiveInfo
from nago_spec.report import front, hv_history, write_report
from nago_spec.store import TrialRecord, TrialState

OBJ = (ObjectiveInfo("error", "minimize", False), ObjectiveInfo("params", "minimize", True))


def _trial(i, error, params, state=TrialState.COMPLETE):
    values = {"error": error, "params": params} if state is TrialState.COMPLETE else None
    return TrialRecord(i, state, {"x": i}, values, error="boom\ndetail" if values is None else None,
                       started=float(i), finished=float(i) + 0.5)


TRIALS = [
    _trial(0, 0.10, 5000.0),
    _trial(1, 0.05, 9000.0),
    _trial(2, 0.20, 8000.0),  # dominated by trial 0
    _trial(3, 0.01, 30000.0),  # best error, breaks the constraint below
    _trial(4, 0.0, 0.0, TrialState.FAILED),
]


def test_front_respects_constraints():
    assert [t.id for t in front(TRIALS, OBJ, ()).pareto] == [0, 1, 3]
    assert [t.id for t in front(TRIALS, OBJ, (ConstraintInfo("params", max=20000.0),)).pareto] == [0, 1]


def test_least_violating_trials_when_none_is_feasible():
    fr = front(TRIALS, OBJ, (ConstraintInfo("params", max=1000.0),))
    assert not any(fr.feasible) and [t.id for t in fr.pareto] == [0]


def test_hypervolume_history_is_monotone_and_normalised():
    hist = hv_history(TRIALS, OBJ, ())
    assert [n for n, _ in hist] == [1, 2, 3, 4, 5]
    hv = np.array([h for _, h in hist])
    assert np.all(np.diff(hv) >= 0) and 0 < hv[-1] <= 1
    assert hv[2] == pytest.approx(hv[1])  # a dominated point adds nothing


def test_write_report_files(tmp_path):
    write_report(tmp_path, name="t", strategy="bo", budget=5, trials=TRIALS, param_names=["x"], objectives=OBJ,
                 constraints=(ConstraintInfo("params", max=20000.0),), wall_seconds=3.0)
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [r["trial"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert rows[3]["feasible"] == "False" and rows[4]["fail_reason"] == "boom" and rows[0]["error"] == "0.1"
    assert [r["trial"] for r in csv.DictReader((tmp_path / "pareto.csv").open())] == ["0", "1"]
    md = (tmp_path / "report.md").read_text()
    assert "| 0 | 0.1 | 5000 | 0 |" in md and "trial 4: boom" in md and "params <= 20000" in md
    for png in ("pareto.png", "hv.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_report_says_when_no_trial_is_feasible(tmp_path):
    write_report(tmp_path, name="t", strategy="bo", budget=5, trials=TRIALS, param_names=["x"], objectives=OBJ,
                 constraints=(ConstraintInfo("params", max=1000.0),), wall_seconds=3.0)
    md = (tmp_path / "report.md").read_text()
    assert "No trial satisfies the constraints" in md and "| 0 | 0.1 | 5000 | 0 |" in md
    assert [r["trial"] for r in csv.DictReader((tmp_path / "pareto.csv").open())] == ["0"]


def test_a_shared_box_puts_compared_runs_on_one_scale():
    better = [_trial(10, 0.0, 1000.0)]  # dominates every point of TRIALS
    box = front([*TRIALS, *better], OBJ, ())
    own = hv_history(TRIALS, OBJ, ())[-1][1]
    shared = hv_history(TRIALS, OBJ, (), box)[-1][1]
    assert shared < own  # the box grew towards the better run's point
    assert hv_history(better, OBJ, (), box)[-1][1] > shared


def test_report_compares_runs_on_hv_png_and_in_report_md(tmp_path):
    from nago_spec.report import Compared

    random_run = [_trial(20, 0.3, 20000.0), _trial(21, 0.15, 7000.0)]
    write_report(tmp_path, name="t", strategy="bo", budget=5, trials=TRIALS, param_names=["x"], objectives=OBJ,
                 constraints=(), initial=2, compare=[Compared("baseline (random)", random_run)])
    md = (tmp_path / "report.md").read_text()
    assert "hypervolume compared, in one box" in md
    assert f"{tmp_path.name} (bo), this run:" in md and "baseline (random):" in md and "after 2 evaluations" in md
    assert (tmp_path / "hv.png").read_bytes()[:4] == b"\x89PNG"


def test_report_refuses_to_compare_runs_of_other_objectives(tmp_path):
    from nago_spec.errors import NagoError
    from runners.run import RunOptions, report_run, run

    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    spec = repo / "specs" / "01_params_zdt1.toml"
    a, b = tmp_path / "a", tmp_path / "b"
    run(spec, RunOptions(out=a, budget=3, backend="local", mode="quiet"))
    run(spec, RunOptions(out=b, budget=3, backend="local", mode="quiet", seed=7))
    assert report_run(a, [b]).read_text().count("after 3 evaluations") == 2
    other = tmp_path / "other.toml"  # f2 maximised: the same names, another problem
    other.write_text(spec.read_text().replace('direction = "minimize"\n\n[search]', 'direction = "maximize"\n\n[search]'))
    (tmp_path / "problems.py").write_text((spec.parent / "problems.py").read_text())
    c = tmp_path / "c"
    run(other, RunOptions(out=c, budget=3, backend="local", mode="quiet"))
    with pytest.raises(NagoError, match="objectives .* differ"):
        report_run(a, [c])
