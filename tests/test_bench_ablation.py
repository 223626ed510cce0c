"""benchmarks/bo_ablation.py: its reference-point rules, and a tiny run of its entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
ablation = load_benchmark("bo_ablation")
FRONT = np.array([[0.0, 1.0], [0.5, 0.4], [1.0, 0.0]])
OBSERVED = np.vstack([FRONT, [[3.0, 2.0]]])


def _points(patch):
    bo = SimpleNamespace()  # a stand-in for the bo module: the real one is patched only in the workers
    patch(bo)
    return bo._reference_points(FRONT, OBSERVED, None)


def test_single_point_rules_give_no_extension_credit():
    near, far = _points(ablation._front_ref)
    assert near == pytest.approx([1.1, 1.1]) and far == pytest.approx(near)
    near, far = _points(ablation._worst_ref)
    assert near == pytest.approx([3.3, 2.2]) and far == pytest.approx(near)


def test_range_ref_bounds_the_extension_at_the_front_nadir_plus_its_range():
    near, far = _points(ablation._range_ref)
    assert near == pytest.approx([1.1, 1.1])
    assert far == pytest.approx([2.0, 2.0])  # nadir + range, inside the worst observed + 10 % (3.3, 2.2)


def test_main_prints_a_row_per_variant():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bo_ablation.py"), "--variants", "bo,front-ref",
         "--problems", "zdt1", "--seeds", "1", "--evals", "12", "--jobs", "2"],
        capture_output=True, text=True, timeout=600, check=True).stdout
    rows = [line.split(" | ")[0] for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows == ["| variant", "| bo", "| front-ref"]
