"""Pareto fronts and hypervolume in minimisation form, with pymoo doing the work."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from nago_spec.problem import ObjectiveInfo


def to_minimization(values: Any, objectives: Sequence[ObjectiveInfo]) -> np.ndarray:
    """Objective values in minimisation form: maximised objectives are negated.

    This is the one place that negates. ``values`` is one mapping name -> value (gives shape (m,)),
    a sequence of such mappings (gives n x m), or a matrix (n x m) / vector (m,) ordered as
    ``objectives``.
    """
    sign = np.array([-1.0 if o.direction == "maximize" else 1.0 for o in objectives])
    if isinstance(values, Mapping):
        return sign * np.array([float(values[o.name]) for o in objectives])
    if isinstance(values, np.ndarray):
        return sign * values.astype(float)
    rows = list(values)
    if rows and isinstance(rows[0], Mapping):
        M = np.array([[float(r[o.name]) for o in objectives] for r in rows])
        return sign * M.reshape(len(rows), len(objectives))
    return sign * np.asarray(rows, dtype=float).reshape(len(rows), len(objectives))


def non_dominated(F: np.ndarray) -> np.ndarray:
    """Indices (sorted) of the non-dominated rows of ``F`` (n x m, minimisation); equal rows are all kept."""
    F = np.asarray(F, dtype=float)
    if F.ndim != 2 or len(F) == 0:
        return np.zeros(0, dtype=int)
    return np.sort(np.asarray(NonDominatedSorting().do(F, only_non_dominated_front=True), dtype=int))


def hypervolume(F: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume dominated by ``F`` (n x m, minimisation) up to ``ref`` (m,); points not strictly
    better than ``ref`` in every objective add nothing and are ignored."""
    ref = np.asarray(ref, dtype=float).reshape(-1)
    F = np.asarray(F, dtype=float).reshape(-1, len(ref))
    F = F[np.all(F < ref, axis=1)]
    if len(F) == 0:
        return 0.0
    return float(HV(ref_point=ref)(F))


def pareto_indices(F: np.ndarray, violations: np.ndarray) -> np.ndarray:
    """Feasibility-aware front of ``F`` (n x m, minimisation) given the total violation (n,) of each row.

    The non-dominated feasible rows (violation <= 0); when no row is feasible, the non-dominated
    rows among the least-violating ones.
    """
    F = np.asarray(F, dtype=float)
    viol = np.asarray(violations, dtype=float).reshape(-1)
    if len(F) == 0:
        return np.zeros(0, dtype=int)
    pool = np.flatnonzero(viol <= 0)
    if len(pool) == 0:
        pool = np.flatnonzero(viol == viol.min())
    return np.sort(pool[non_dominated(F[pool])])


def improvement_boxes(front: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The region below ``ref`` that ``front`` (k x m, minimisation, m <= 3) does not dominate, as disjoint
    boxes ``lower``, ``upper`` (each J x m; lower bounds may be -inf).

    A point y then improves the front's hypervolume by sum_j prod_i (u_ji - max(y_i, l_ji))+, which a
    Monte-Carlo acquisition evaluates for thousands of points and posterior samples at once. Front
    points not strictly better than ``ref`` in every objective are ignored; dominated ones may stay.
    One objective: the interval below the best value. Two: with the front sorted by f1 (so the running
    minimum of f2 falls), the strips between consecutive f1 values under that minimum. Three: slabs of
    f3 between consecutive f3 values of the front, each the product of its f3 interval and the
    two-objective region of the points below it.
    """
    ref = np.asarray(ref, dtype=float).reshape(-1)
    m = len(ref)
    P = np.asarray(front, dtype=float).reshape(-1, m)
    P = P[np.all(P < ref, axis=1)]
    if m == 1:
        best = min(float(P[:, 0].min()), float(ref[0])) if len(P) else float(ref[0])
        return np.array([[-np.inf]]), np.array([[best]])
    if m == 2:
        return _boxes_2d(P, ref)
    if m == 3:
        return _boxes_3d(P, ref)
    raise ValueError(f"improvement_boxes handles up to three objectives, got {m}")


def _boxes_2d(P: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(P) == 0:
        return np.array([[-np.inf, -np.inf]]), ref[None, :].copy()
    P = P[np.argsort(P[:, 0], kind="stable")]
    left = np.concatenate([[-np.inf], P[:, 0]])
    right = np.concatenate([P[:, 0], [ref[0]]])
    top = np.concatenate([[ref[1]], np.minimum.accumulate(P[:, 1])])
    return np.column_stack([left, np.full(len(left), -np.inf)]), np.column_stack([right, top])


def _boxes_3d(P: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(P) == 0:
        return np.array([[-np.inf, -np.inf, -np.inf]]), ref[None, :].copy()
    P = P[np.argsort(P[:, 2], kind="stable")]
    z = np.concatenate([[-np.inf], P[:, 2], [ref[2]]])
    # a 2-D box that stays the same over consecutive slabs is one taller box: most of a staircase
    # survives the next point, so this keeps O(k) boxes where slab by slab gives O(k^2)
    open_: dict[tuple[float, float, float], float] = {}  # (x_lo, x_hi, y_hi) -> z_lo
    lows, highs = [], []
    for j in range(len(P) + 1):
        if z[j + 1] <= z[j]:
            continue
        lo, hi = _boxes_2d(P[:j, :2], ref[:2])
        now = {(float(a), float(b), float(c)) for a, b, c in zip(lo[:, 0], hi[:, 0], hi[:, 1]) if b > a and c > -np.inf}
        for box in [k for k in open_ if k not in now]:
            lows.append((box[0], -np.inf, open_[box]))
            highs.append((box[1], box[2], z[j]))
            del open_[box]
        for box in now:
            open_.setdefault(box, z[j])
    for box, z_lo in open_.items():
        lows.append((box[0], -np.inf, z_lo))
        highs.append((box[1], box[2], ref[2]))
    return np.array(lows, dtype=float).reshape(-1, 3), np.array(highs, dtype=float).reshape(-1, 3)


def box_improvements(Y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Hypervolume improvement (n) of each row of ``Y`` (n x m) over the boxes of ``improvement_boxes``."""
    edge = np.maximum(np.asarray(Y, dtype=float)[:, None, :], lower[None])
    return np.clip(upper[None] - edge, 0.0, None).prod(axis=2).sum(axis=1)
