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
