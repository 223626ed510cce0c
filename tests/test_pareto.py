"""Tests of Pareto fronts, hypervolume and constraint violations against brute-force oracles."""

from __future__ import annotations

import numpy as np
import pytest

from nago_spec.pareto import hypervolume, non_dominated, pareto_indices, to_minimization
from nago_spec.problem import ConstraintInfo, ObjectiveInfo

OBJS = (ObjectiveInfo("acc", "maximize", False), ObjectiveInfo("size", "minimize", True))


def _dominated_oracle(F: np.ndarray) -> np.ndarray:
    """Indices of the rows no other row dominates (brute force)."""
    keep = []
    for i, f in enumerate(F):
        if not any(np.all(g <= f) and np.any(g < f) for g in F):
            keep.append(i)
    return np.array(keep, dtype=int)


def _hv2d_oracle(F: np.ndarray, ref: np.ndarray) -> float:
    """2-D hypervolume by a sweep over the points sorted by the first objective."""
    F = F[np.all(F < ref, axis=1)]
    hv, best = 0.0, ref[1]
    for f1, f2 in sorted(map(tuple, F)):
        if f2 < best:
            hv += (ref[0] - f1) * (best - f2)
            best = f2
    return hv


def test_to_minimization_negates_maximised_objectives_only():
    assert np.allclose(to_minimization({"acc": 0.9, "size": 3.0}, OBJS), [-0.9, 3.0])
    rows = [{"acc": 0.9, "size": 3.0, "extra": 1.0}, {"acc": 0.5, "size": 1.0}]
    assert np.allclose(to_minimization(rows, OBJS), [[-0.9, 3.0], [-0.5, 1.0]])
    assert np.allclose(to_minimization(np.array([[0.9, 3.0]]), OBJS), [[-0.9, 3.0]])
    assert to_minimization([], OBJS).shape == (0, 2)


def test_non_dominated_matches_brute_force():
    rng = np.random.default_rng(0)
    for m in (1, 2, 3):
        for _ in range(20):
            F = rng.integers(0, 6, (25, m)).astype(float)  # ties and duplicates included
            assert np.array_equal(non_dominated(F), _dominated_oracle(F))
    assert non_dominated(np.zeros((0, 2))).size == 0


def test_hypervolume_matches_a_2d_sweep_and_ignores_points_beyond_ref():
    rng = np.random.default_rng(1)
    ref = np.array([1.0, 1.0])
    for _ in range(20):
        F = rng.uniform(0, 1.3, (15, 2))
        assert hypervolume(F, ref) == pytest.approx(_hv2d_oracle(F, ref), abs=1e-12)
    assert hypervolume(np.array([[0.5, 0.5], [2.0, 0.0], [0.0, 1.0]]), ref) == pytest.approx(0.25)
    assert hypervolume(np.zeros((0, 2)), ref) == 0.0
    assert hypervolume(np.array([[0.2], [0.6]]), np.array([1.0])) == pytest.approx(0.8)


def test_pareto_indices_prefers_feasible_and_else_least_violating():
    F = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 2.0], [2.0, 0.5], [3.0, 3.0]])
    viol = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
    assert pareto_indices(F, viol).tolist() == [1, 2, 3]  # the dominating point 0 is infeasible
    assert pareto_indices(F, np.zeros(5)).tolist() == [0]
    assert pareto_indices(F, np.array([3.0, 2.0, 0.5, 0.5, 0.5])).tolist() == [2, 3]
    assert pareto_indices(np.zeros((0, 2)), np.zeros(0)).size == 0


def test_constraint_violation_is_the_distance_to_the_bound():
    c = ConstraintInfo("size", min=1.0, max=3.0)
    assert c.violation(2.0) == 0.0 and c.violation(1.0) == 0.0 and c.violation(3.0) == 0.0
    assert c.violation(0.25) == pytest.approx(0.75) and c.violation(5.0) == pytest.approx(2.0)
    assert ConstraintInfo("size", max=3.0).violation(-100.0) == 0.0


def test_improvement_boxes_give_the_indicator_difference():
    from nago_spec.pareto import box_improvements, improvement_boxes

    rng = np.random.default_rng(3)
    lo, hi = improvement_boxes(np.array([[0.5], [0.7]]), [1.0])
    np.testing.assert_allclose(box_improvements(np.array([[0.2], [0.6], [1.5]]), lo, hi), [0.3, 0.0, 0.0])
    for m in (2, 3):
        ref = np.full(m, 1.1)
        for k in (0, 1, 6, 15):
            front = rng.random((k, m))
            front = np.vstack([front, front[:2] + 0.05])  # dominated points may stay in the front
            Y = rng.random((40, m)) * 1.2 - 0.05
            if k:
                best = front[non_dominated(front)[0]]
                Y[0] = best  # on the front: no improvement
                Y[1] = best - 0.01  # dominates a front point
            lo, hi = improvement_boxes(front, ref)
            got = box_improvements(Y, lo, hi)
            base = hypervolume(front, ref)
            want = np.array([hypervolume(np.vstack([front, y]), ref) - base for y in Y])
            np.testing.assert_allclose(got, want, atol=1e-12)
            if k:
                assert got[0] == pytest.approx(0.0, abs=1e-12) and got[1] > 0
    with pytest.raises(ValueError, match="up to three objectives"):
        improvement_boxes(np.zeros((1, 4)), np.ones(4))
