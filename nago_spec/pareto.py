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
    on the best value (expected improvement's integrand); with two and three it is exact (the
    point's box [y, ref] less what the front already dominates in it). With more, it is the
    Monte-Carlo estimate over ``samples`` (s x m, uniform in the box [min over Y and front, ref];
    required): the box volume times the fraction of samples the point dominates and the front does not.
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
    if m == 3:
        return _hvi_3d(Y, P, ref)
    if samples is None:
        raise ValueError("hv_improvements needs uniform `samples` of the box for 4 or more objectives")
    S = np.asarray(samples, dtype=float).reshape(-1, m)
    lo = S.min(axis=0)
    volume = float(np.prod(ref - lo))
    free = ~np.any(np.all(P[:, None, :] <= S[None, :, :], axis=2), axis=0) if len(P) else np.ones(len(S), bool)
    S = S[free]
    gained = np.zeros(len(Y))
    # only points the front does not dominate can gain anything (most of them, once the front is dense)
    open_ = ~np.any(np.all(P[None, :, :] <= Y[:, None, :], axis=2), axis=1) if len(P) else np.ones(len(Y), bool)
    rows = np.flatnonzero(open_ & np.all(Y < ref, axis=1))
    if len(S) == 0 or len(rows) == 0:
        return gained
    for start in range(0, len(rows), 256):  # bounded memory: 256 x s x m booleans at a time
        block = rows[start:start + 256]
        gained[block] = np.all(Y[block][:, None, :] <= S[None, :, :], axis=2).sum(axis=1)
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


def _hvi_3d(Y: np.ndarray, P: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Exact three-objective improvement: the volume of [y, ref] less the hypervolume of the front clipped
    to it (the points max(p, y)), the latter as slabs along f3 of two-dimensional staircases."""
    out = np.zeros(len(Y))
    rows = np.flatnonzero(np.all(Y < ref, axis=1))
    if len(rows) == 0:
        return out
    out[rows] = np.prod(ref - Y[rows], axis=1)
    if len(P) == 0:
        return out
    P = P[non_dominated(P)]
    r = len(P)
    for start in range(0, len(rows), 256):  # bounded memory: 256 x r x r at a time
        block = rows[start:start + 256]
        Q = np.maximum(P[None, :, :], Y[block][:, None, :])  # k x r x 3: the front clipped to each box
        Q = np.take_along_axis(Q, np.argsort(Q[:, :, 2], axis=1)[:, :, None], axis=1)  # by f3
        dz = np.diff(np.concatenate([Q[:, :, 2], np.full((len(block), 1), ref[2])], axis=1), axis=1)  # slab j: z_j..z_j+1
        ox = np.argsort(Q[:, :, 0], axis=1)  # by f1 within each box; ox[i] is that point's f3 rank
        xs = np.take_along_axis(Q[:, :, 0], ox, axis=1)
        ys = np.take_along_axis(Q[:, :, 1], ox, axis=1)
        active = ox[:, None, :] <= np.arange(r)[None, :, None]  # k x slab x point: the points below slab j's top
        low = np.minimum.accumulate(np.where(active, ys[:, None, :], ref[1]), axis=2)
        widths = np.diff(np.concatenate([xs, np.full((len(block), 1), ref[0])], axis=1), axis=1)
        area = (widths[:, None, :] * (ref[1] - low)).sum(axis=2)  # k x slab: the staircase's area
        out[block] -= (dz * area).sum(axis=1)
    return np.maximum(out, 0.0)
