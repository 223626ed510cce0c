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


def hv_improvements(Y: np.ndarray, front: np.ndarray, ref: np.ndarray, *, samples: np.ndarray | None = None) -> np.ndarray:
    """Hypervolume improvement (k,) of each row of ``Y`` (k x m) added alone to ``front`` (r x m), up to ``ref``.

    Minimisation form. For many points at once (Monte-Carlo acquisition needs tens of thousands),
    where calling the indicator per point would be slow. With one objective it is the improvement
    on the best value (expected improvement's integrand); with two it is exact: the
    area of the point's box [y, ref] above the front's staircase, summed over the staircase's
    steps. With more, it is the Monte-Carlo estimate over ``samples`` (s x m, uniform in the box
    [min over Y and front, ref]; required): the box volume times the fraction of samples the point
    dominates and the front does not.
    """
    ref = np.asarray(ref, dtype=float).reshape(-1)
    m = len(ref)
    Y = np.asarray(Y, dtype=float).reshape(-1, m)
    P = np.asarray(front, dtype=float).reshape(-1, m)
    P = P[np.all(P < ref, axis=1)]
    if m == 1:  # the length of [y, ref] below the best point so far
        best = min(float(P.min()), float(ref[0])) if len(P) else float(ref[0])
        return np.clip(best - np.minimum(Y[:, 0], ref[0]), 0.0, None)
    if m == 2:
        return _hvi_2d(Y, P, ref)
    if samples is None:
        raise ValueError("hv_improvements needs uniform `samples` of the box for 3 or more objectives")
    S = np.asarray(samples, dtype=float).reshape(-1, m)
    lo = S.min(axis=0)
    volume = float(np.prod(ref - lo))
    free = ~np.any(np.all(P[:, None, :] <= S[None, :, :], axis=2), axis=0) if len(P) else np.ones(len(S), bool)
    S = S[free]
    if len(S) == 0:
        return np.zeros(len(Y))
    gained = np.zeros(len(Y))
    for start in range(0, len(Y), 256):  # bounded memory: 256 x s x m booleans at a time
        block = Y[start:start + 256]
        gained[start:start + 256] = np.all(block[:, None, :] <= S[None, :, :], axis=2).sum(axis=1)
    return volume * gained / len(free)


def _hvi_2d(Y: np.ndarray, P: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Exact two-objective improvement: the box [y1, r1] x [y2, r2] minus the front's dominated staircase."""
    y1, y2 = np.minimum(Y[:, 0], ref[0]), np.minimum(Y[:, 1], ref[1])
    if len(P) == 0:
        return (ref[0] - y1) * (ref[1] - y2)
    P = P[non_dominated(P)]
    P = P[np.argsort(P[:, 0])]  # f1 ascending, so f2 descending: the staircase
    # step i covers f1 in [a_i, a_{i+1}) with height b_i (everything at or above b_i is dominated)
    a = np.append(P[:, 0], ref[0])
    starts = np.concatenate([[-np.inf], a[:-1]])
    ends = a
    heights = np.concatenate([[ref[1]], P[:, 1]])  # before the first front point nothing is dominated
    width = np.clip(np.minimum(ends[None, :], ref[0]) - np.maximum(starts[None, :], y1[:, None]), 0.0, None)
    tall = np.clip(np.minimum(heights[None, :], ref[1]) - y2[:, None], 0.0, None)
    return (width * tall).sum(axis=1)
