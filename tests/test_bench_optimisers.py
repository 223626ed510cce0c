"""benchmarks/optimisers.py: its problems against their definitions, and a tiny run of its entry point."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from nago_spec.pipeline import Evaluator
from nago_spec.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


def _load_benchmark():
    name = "_bench_optimisers"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "optimisers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()
problems = bench.problems_module()
HAS_MACRO = problems.nasbench_macro_path().is_file()
needs_macro = pytest.mark.skipif(not HAS_MACRO, reason=f"NAS-Bench-Macro table absent at {problems.nasbench_macro_path()}")


def _point(x) -> dict[str, float]:
    return {f"x{i + 1}": float(v) for i, v in enumerate(x)}


def test_zdt_front_points():
    for f1 in np.linspace(0.0, 1.0, 11):
        x = [f1, 0, 0, 0, 0, 0]
        assert problems.zdt1(_point(x))["f2"] == pytest.approx(1.0 - math.sqrt(f1), abs=1e-12)
        assert problems.zdt2(_point(x))["f2"] == pytest.approx(1.0 - f1**2, abs=1e-12)
    # off the front (g > 1) f2 is worse
    assert problems.zdt1(_point([0.25, 0.5, 0, 0, 0, 0]))["f2"] > 1.0 - math.sqrt(0.25)


def test_dtlz2_optimal_points_lie_on_the_unit_sphere():
    rng = np.random.default_rng(0)
    for a, b in rng.random((20, 2)):
        f = problems.dtlz2(_point([a, b, 0.5, 0.5, 0.5, 0.5]))
        assert math.fsum(v * v for v in f.values()) == pytest.approx(1.0, abs=1e-12)
        assert all(v >= -1e-15 for v in f.values())
    off = problems.dtlz2(_point([0.3, 0.6, 0.1, 0.5, 0.5, 0.9]))
    assert math.sqrt(sum(v * v for v in off.values())) == pytest.approx(1.0 + 0.4**2 + 0.4**2)


def test_true_front_hypervolumes_match_the_exact_values():
    assert bench.true_front_hv("zdt1", np.array([1.1, 1.1])) == pytest.approx(0.11 + 0.1 + 2 / 3, abs=2e-4)
    assert bench.true_front_hv("zdt2", np.array([1.1, 1.1])) == pytest.approx(0.11 + 0.1 + 1 / 3, abs=2e-4)
    assert bench.true_front_hv("dtlz2", np.array([1.1] * 3)) == pytest.approx(1.1**3 - math.pi / 6, abs=2e-3)


@needs_macro
def test_nasbench_macro_objectives_match_the_table():
    raw = json.loads(problems.nasbench_macro_path().read_text())
    max_params = max(v["params"] for v in raw.values())
    key = "02012100"
    spec = load_spec(bench.PROBLEMS["nasbench_macro"].spec)
    params = {f"l{i + 1}": int(c) for i, c in enumerate(key)}
    values, _ = Evaluator(spec).evaluate(params, 0, None)
    assert values["error"] == pytest.approx(1 - raw[key]["mean_acc"] / 100)
    assert values["params"] == pytest.approx(raw[key]["params"] / max_params)
    assert [o.cheap for o in Evaluator(spec).problem(None).objectives] == [False, True]
    front = problems.true_front("nasbench_macro")
    assert front.min(axis=0) == pytest.approx([1 - max(v["mean_acc"] for v in raw.values()) / 100,
                                               min(v["params"] for v in raw.values()) / max_params])


def test_every_method_starts_from_our_sobol_design():
    task = bench.Task.load(bench.PROBLEMS["zdt1"], seed=3, budget=12, initial=5)
    from nago_spec.strategies import STRATEGIES

    bo = STRATEGIES.get("bo")(task.problem, seed=3, initial=5, batch=1)
    ours = [bo.ask(1, next_trial_id=t)[0] for t in range(5)]
    assert ours == task.problem.space.from_unit_many(task.initial_design())


def test_bo_ref_gives_bo_the_scoring_reference_point(monkeypatch):
    from nago_spec.strategies.bo import BOStrategy

    seen = []
    init = BOStrategy.__init__

    def spy(self, problem, **kw):
        seen.append([o.ref for o in problem.objectives])
        init(self, problem, **kw)

    monkeypatch.setattr(BOStrategy, "__init__", spy)
    task = bench.Task.load(bench.PROBLEMS["kursawe"], seed=0, budget=3, initial=3)
    assert len(bench.run_ours("bo_ref", task)) == len(bench.run_ours("bo", task)) == 3
    assert seen == [[-14.0, 1.2], [None, None]]


def test_main_prints_a_table_per_problem_and_batch_and_reads_finished_runs_back(capsys, tmp_path):
    names = "zdt1,nasbench_macro"
    runs = tmp_path / "runs.jsonl"
    argv = ["--problems", names, "--methods", "random,bo", "--seeds", "1", "--evals", "12", "--initial", "6",
            "--batches", "1,2", "--batch4-at", "20", "--runs", str(runs)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    sections = re.split(r"^## ", out, flags=re.MULTILINE)[1:]
    assert [s.splitlines()[0].split(":")[0] for s in sections] == [
        "zdt1, batch 1", "zdt1, batch 2", "nasbench_macro, batch 1", "nasbench_macro, batch 2", "bo against the targets"]
    for section in sections[:-1]:
        if section.startswith("nasbench_macro") and not HAS_MACRO:
            assert "skipped: table not found" in section
            continue
        true_hv = float(re.search(r"true front hypervolume ([0-9.]+)", section).group(1))
        rows = [line for line in section.splitlines() if line.startswith("| ") and "(ours)" in line]
        assert len(rows) == 2
        for row in rows:
            hv = float(row.split("|")[2].split("±")[0])
            assert 0.0 <= hv <= true_hv
            assert row.split("|")[6].strip() == "n/a"  # no qLogNEHVI in this run
    assert re.search(r"bo batch-4 proposal at 20 observations: [0-9.]+ s", out)
    # the runs were recorded as they finished; a second call reads them back instead of running them
    recorded = runs.read_text().splitlines()
    assert len(recorded) == (4 if HAS_MACRO else 2) * 2
    assert bench.main(argv[:-3] + ["0", "--runs", str(runs)]) == 0
    assert capsys.readouterr().out.split("bo batch-4")[0] == out.split("bo batch-4")[0]
    assert runs.read_text().splitlines() == recorded


def test_new_problems_against_their_definitions():
    x = {f"x{i}": 0.0 for i in range(1, 7)}
    assert problems.zdt3(x) == {"f1": 0.0, "f2": 1.0}
    assert problems.dtlz7(x) == {"f1": 0.0, "f2": 0.0, "f3": 6.0}  # (1 + g) h with g = 1, h = 3
    assert problems.kursawe({"x1": 0.0, "x2": 0.0, "x3": 0.0}) == {"f1": -20.0, "f2": 0.0}
    c = problems.c2dtlz2({**x, **{f"x{i}": 0.5 for i in range(2, 7)}})  # x1 = 0: f = (1, 0) on the circle
    assert c["f1"] == pytest.approx(1.0) and c["f2"] == pytest.approx(0.0, abs=1e-12) and c["c"] <= 0
    assert problems.c2dtlz2({**x, "x1": 0.3, **{f"x{i}": 0.5 for i in range(2, 7)}})["c"] > 0  # between the arcs
    # the noise is a fixed draw per point, of sd 0.05
    a, b = problems.zdt1_noisy(x), problems.zdt1_noisy(x)
    assert a == b and a != problems.zdt1(x)
    draws = np.array([problems.point_noise({"x1": float(v)}, 2) for v in np.linspace(0, 1, 2000)])
    assert draws.std() == pytest.approx(0.05, rel=0.1) and abs(draws.mean()) < 0.005


def test_new_true_fronts():
    ref2 = np.array([1.1, 1.1])
    from nago_spec.pareto import hypervolume, non_dominated

    for name in ("zdt3", "dtlz7", "kursawe", "c2dtlz2"):
        F = problems.true_front(name)
        assert len(non_dominated(F)) == len(F)  # a front
    # ZDT3: five pieces; C2-DTLZ2: feasible arcs of the unit circle only
    zdt3 = problems.true_front("zdt3")
    assert zdt3[:, 0].max() == pytest.approx(0.8518, abs=1e-4) and zdt3[:, 1].min() == pytest.approx(-0.7734, abs=1e-4)
    c2 = problems.true_front("c2dtlz2")
    np.testing.assert_allclose((c2**2).sum(axis=1), 1.0)
    assert 0.3 < hypervolume(c2, ref2) < 1.1**2 - math.pi / 4  # part of the quarter circle's hypervolume
    # DTLZ7: f3 = 6 - sum f_i (1 + sin 3 pi f_i) on g = 0, with f1 = f2 = 0 on it
    d7 = problems.true_front("dtlz7")
    np.testing.assert_allclose(d7[:, 2], 6 - (d7[:, :2] * (1 + np.sin(3 * np.pi * d7[:, :2]))).sum(axis=1))
    assert [0.0, 0.0, 6.0] in d7.tolist()


def test_nb201_parameter_counts_span_nas_bench_201s_range():
    assert problems.nb201_params("222222") == problems.NB201_MAX_PARAMS == 1_531_546
    assert problems.nb201_params("000000") == problems.nb201_params("114414") == 73_306
    assert problems.nb201_params("333333") < problems.nb201_params("222222")


@pytest.mark.skipif(not problems.nb201_path().is_file(), reason=f"AnalogNAS-Bench table absent at {problems.nb201_path()}")
def test_nb201_objectives_match_the_table():
    import csv

    row = next(r for r in csv.DictReader(open(problems.nb201_path())) if r["op_indices"] == "232140")
    spec = load_spec(bench.PROBLEMS["nb201"].spec)
    params = {f"e{i + 1}": problems.NB201_OPS[int(c)] for i, c in enumerate("232140")}
    values, _ = Evaluator(spec).evaluate(params, 0, None)
    assert values["error"] == pytest.approx(1 - float(row["baseline_accuracy"]) / 100)
    assert values["int8_error"] == pytest.approx(1 - float(row["ptq_accuracy"]) / 100)
    assert values["params"] == pytest.approx(problems.nb201_params("232140") / problems.NB201_MAX_PARAMS)
    assert [o.cheap for o in Evaluator(spec).problem(None).objectives] == [False, False, True]


def test_bo_options_reach_every_bo_run_and_keep_their_runs_apart(monkeypatch, capsys, tmp_path):
    from nago_spec.strategies.bo import BOStrategy

    seen = []
    init = BOStrategy.__init__

    def spy(self, problem, **kw):
        init(self, problem, **kw)
        seen.append(self._scalarise_every)

    monkeypatch.setattr(BOStrategy, "__init__", spy)
    runs = tmp_path / "runs.jsonl"
    argv = ["--problems", "kursawe", "--methods", "bo,bo_ref", "--seeds", "1", "--evals", "8", "--initial", "6",
            "--batches", "1", "--batch4-at", "0", "--runs", str(runs)]
    assert bench.main(argv) == 0 and seen == [0, 0]  # no cheap objective: no scalarised trials by default
    seen.clear()
    assert bench.main(argv + ["--bo-option", "scalarise_every=2"]) == 0
    assert seen == [2, 2, 2]  # the option's check, then both runs: not read back from those without it
    assert "bo's options (bo and bo_ref): scalarise_every = 2" in capsys.readouterr().out
    lines = [json.loads(line) for line in runs.read_text().splitlines()]
    assert [r.get("bo_options") for r in lines] == [None, None, {"scalarise_every": 2}, {"scalarise_every": 2}]
    seen.clear()
    assert bench.main(argv + ["--bo-option", "scalarise_every=2"]) == 0 and seen == [2]  # runs read back
    for bad in ("scalarise_every=-1", "no_such=1", "scalarise_every"):
        with pytest.raises(SystemExit) as exc:
            bench.main(argv + ["--bo-option", bad])
        assert exc.value.code == 2
    assert "--bo-option" in capsys.readouterr().err
