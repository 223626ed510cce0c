"""Multi-fidelity runs end to end (issue 9): Hyperband brackets on real training, the report's budgets,
and resume after kill -9 in the middle of a bracket."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import TINY_SPEC, kill_run_at

from nago_spec.store import Store, TrialState
from nago_spec.runners.run import RunOptions, run

# Budgets 0.25, 0.5 and 1 epoch (eta 2): bracket 0 runs 4 configs at 0.25, 2 at 0.5 and 1 at 1
# (cost 3 full-budget equivalents), bracket 1 runs 3 at 0.5 and 1 at 1 (2.5); bracket 2 (3 at 1)
# does not fit in a budget of 6.
SEARCH = """[search]
strategy = "bo"
budget = 6
initial = 3
batch = 2
fidelity = { min = 0.25, max = 1 }
[search.options]
pop_size = 16
generations = 5
restarts = 1
fit_iters = 20
"""


def _spec(tmp_path: Path, export: bool = False) -> Path:
    old = '[search]\nstrategy = "bo"\nbudget = 4\ninitial = 2\nbatch = 2\n'
    assert old in TINY_SPEC
    path = tmp_path / "mf.toml"
    path.write_text(TINY_SPEC.replace(old, SEARCH) + ("" if export else "onnx = false\n"))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("mf")
    out = tmp / "run"
    run(_spec(tmp, export=True), RunOptions(out=out, mode="quiet"))
    return out


def _trials(out: Path) -> list:
    with Store(out / "study.db") as s:
        return s.trials()


def test_brackets_follow_hyperband_and_promote_the_best(finished):
    trials = _trials(finished)
    assert all(t.state is TrialState.COMPLETE for t in trials)
    shape = {}
    for t in trials:
        shape.setdefault((t.bracket, t.rung), []).append(t)
    assert {k: (len(v), v[0].budget) for k, v in shape.items()} == {
        (0, 0): (4, 0.25), (0, 1): (2, 0.5), (0, 2): (1, 1.0), (1, 0): (3, 0.5), (1, 1): (1, 1.0),
    }
    by_id = {t.id: t for t in trials}
    for t in trials:
        if t.rung == 0:
            assert t.config == t.id
        else:  # a promotion: the same configuration and architectures, trained for the larger budget
            first = by_id[t.config]
            assert first.rung == 0 and first.bracket == t.bracket and t.params == first.params
            assert t.samples[0]["seed"] == first.samples[0]["seed"]
            assert t.samples[0]["train"]["epochs"] == pytest.approx(t.budget, abs=0.06)
    # rung 1 of bracket 0 holds the 2 best of rung 0 by non-dominated rank: no config left behind
    # dominates a promoted one (error and params both minimised)
    rung0 = shape[0, 0]
    up = {t.config for t in shape[0, 1]}
    for t in (x for x in rung0 if x.id in up):
        dominators = [o for o in rung0 if o.id not in up and all(o.values[k] <= t.values[k] for k in t.values)
                      and o.values != t.values]
        assert not dominators, (t.id, dominators)


def test_the_report_shows_budgets_and_the_front_at_the_highest_budget(finished):
    report = (finished / "report.md").read_text()
    assert "## Budgets" in report and "Hyperband with eta = 2, budgets 0.25, 0.5, 1" in report
    assert "| 0 | 2 | 1 | 1 |" in report  # bracket 0, rung 2, budget 1, one trial
    rows = list(csv.DictReader((finished / "trials.csv").open()))
    assert len(rows) == 11 and {r["budget"] for r in rows} == {"0.25", "0.5", "1.0"}
    pareto = list(csv.DictReader((finished / "pareto.csv").open()))
    assert pareto and all(r["budget"] == "1.0" for r in pareto)
    manifest = json.loads((finished / "models" / "manifest.json").read_text())
    top = {t.id for t in _trials(finished) if t.budget == 1.0}
    assert manifest["models"] and {m["trial"] for m in manifest["models"]} <= top


def test_a_run_killed_mid_bracket_resumes_to_the_same_trials(tmp_path, finished):
    spec = _spec(tmp_path)
    out = tmp_path / "killed"
    for k in (2, 5, 9):  # in rung 0 of bracket 0, in its rung 1, in bracket 1
        kill_run_at(spec, out, k, timeout=120)
    run(spec, RunOptions(out=out, mode="quiet"))
    resumed, whole = _trials(out), _trials(finished)

    def record(t):
        return (t.id, t.state, t.config, t.bracket, t.rung, t.budget, t.params, t.values)

    assert [record(t) for t in resumed] == [record(t) for t in whole]


def test_a_data_fraction_fidelity_trains_on_nested_subsets_for_the_same_epochs(tmp_path):
    text = _spec(tmp_path).read_text().replace("budget = 6", "budget = 3").replace(
        "fidelity = { min = 0.25, max = 1 }", 'fidelity = { min = 0.25, max = 1, on = "data" }')
    spec = tmp_path / "data.toml"
    spec.write_text(text)
    out = run(spec, RunOptions(out=tmp_path / "run", mode="quiet"))
    trials = _trials(out)
    assert [(t.bracket, t.rung, t.budget) for t in trials] == [(0, 0, 0.25)] * 4 + [(0, 1, 0.5)] * 2 + [(0, 2, 1.0)]
    full = max(t.samples[0]["train"]["images"] for t in trials)
    for t in trials:
        train = t.samples[0]["train"]
        assert train["epochs"] == 1.0  # [train].epochs: the budget is the data here
        assert abs(train["images"] - t.budget * full) <= 10  # ceil per class: at most one image more per class


def test_status_counts_the_planned_trials_and_shows_the_front_at_the_highest_budget(finished):
    from nago_spec.runners.run import status_text

    text = status_text(finished)
    assert "11/11 evaluations (11 complete" in text.splitlines()[0]
    top = {t.id for t in _trials(finished) if t.budget == 1.0}
    listed = [int(line.split()[1].rstrip(":")) for line in text.splitlines() if line.startswith("  trial ")]
    assert listed and set(listed) <= top


# -- issue 20, point 3: the bugs that lived in the copies of the front and of the seeds ---------------


def _copy_run(finished: Path, tmp_path: Path) -> Path:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    return out


def test_export_of_a_multi_fidelity_run_chooses_from_the_top_budget_and_keeps_its_files(finished, tmp_path):
    """(a) `nago export DIR` chose among every budget's trials and deleted the files the run had exported."""
    from nago_spec.runners.run import export_run

    out = _copy_run(finished, tmp_path)
    before = sorted(p.name for p in (out / "models").glob("*.onnx"))
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "models").glob("*.onnx")}
    export_run(out, mode="quiet")
    manifest = json.loads((out / "models" / "manifest.json").read_text())
    top = {t.id for t in _trials(out) if t.budget == 1.0}
    assert {m["trial"] for m in manifest["models"]} <= top
    assert sorted(p.name for p in (out / "models").glob("*.onnx")) == before
    assert {p.name: p.stat().st_mtime_ns for p in (out / "models").glob("*.onnx")} == stamps  # nothing retrained


def test_a_promoted_trial_exports_and_draws_the_architectures_the_search_trained(finished, tmp_path, capsys):
    """(b) export and draw seeded a promotion's architectures from its own id, not its configuration's."""
    from nago_spec.seeds import sample_seed
    from nago_spec.runners.cli import main

    trials = {t.id: t for t in _trials(finished)}
    manifest = json.loads((finished / "models" / "manifest.json").read_text())
    promoted = [m for m in manifest["models"] if trials[m["trial"]].config != m["trial"]]
    assert promoted  # the top budget holds promotions only here
    for m in promoted:
        t = trials[m["trial"]]
        assert m["seed"] == sample_seed(0, t.config, m["sample"])
        if m["sample"] == 0:  # sample 0 is the network the search trained and measured
            assert m["params"] == t.values["params"]
    t = trials[promoted[0]["trial"]]
    png = tmp_path / "drawn.png"
    assert main(["draw", str(finished), "--trial", str(t.id), "--out", str(png)]) == 0
    assert f"trial {t.id} (complete): {int(t.values['params']):,} parameters" in capsys.readouterr().out


def test_compare_and_status_use_the_report_s_front(finished, tmp_path, capsys):
    """(c) `report --compare` of a multi-fidelity run mixed budgets; (d) status and report.md could show
    different fronts (status took the highest budget completed so far, the report [search.fidelity].max),
    and status's best values did not say which trial each came from."""
    import csv
    import sqlite3

    from nago_spec.runners.run import report_run, status_text

    out = _copy_run(finished, tmp_path)
    conn = sqlite3.connect(out / "study.db")  # a run stopped before any trial of the top budget finished
    conn.execute("UPDATE trials SET state = 'PENDING', \"values\" = NULL WHERE budget = 1.0")
    conn.commit()
    conn.close()
    report_run(out, compare=[out])
    pareto = sorted(int(r["trial"]) for r in csv.DictReader((out / "pareto.csv").open()))
    text = status_text(out)
    listed = sorted(int(line.split()[1].rstrip(":")) for line in text.splitlines() if line.startswith("  trial "))
    assert pareto and listed == pareto
    assert {t.budget for t in _trials(out) if t.id in pareto} == {0.5}
    best = next(line for line in text.splitlines() if line.startswith("best: "))
    assert "(trial " in best
    report = (out / "report.md").read_text()
    mine, other = [line for line in report.splitlines() if line.startswith("  - ")][:2]
    assert mine.split(": ")[1] == other.split(": ")[1]  # the run compared with itself: one hypervolume
