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


def test_main_prints_a_table_per_problem(capsys):
    names = "zdt1,nasbench_macro"
    code = bench.main(["--problems", names, "--methods", "random,bo", "--seeds", "1", "--evals", "12",
                       "--initial", "6", "--batch4-at", "20"])
    assert code == 0
    out = capsys.readouterr().out
    sections = re.split(r"^## ", out, flags=re.MULTILINE)[1:]
    assert [s.split(":")[0] for s in sections] == names.split(",")
    for section in sections:
        if section.startswith("nasbench_macro") and not HAS_MACRO:
            assert "skipped: NAS-Bench-Macro table not found" in section
            continue
        true_hv = float(re.search(r"true front hypervolume ([0-9.]+)", section).group(1))
        rows = [line for line in section.splitlines() if line.startswith("| ") and "(ours)" in line]
        assert len(rows) == 2
        for row in rows:
            hv = float(row.split("|")[2].split("±")[0])
            assert 0.0 <= hv <= true_hv
            assert row.split("|")[5].strip() == "n/a"  # no qLogNEHVI in this run
    assert re.search(r"bo batch-4 proposal at 20 observations: [0-9.]+ s", out)
