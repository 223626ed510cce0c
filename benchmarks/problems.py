"""Objective callables and true Pareto fronts of the optimiser benchmark's problems (benchmarks/specs/).

ZDT1, ZDT2 (Zitzler, Deb and Thiele 2000) and DTLZ2 (Deb, Thiele, Laumanns and Zitzler 2002) in
their standard definitions on x in [0, 1]^n, and NAS-Bench-Macro (Su et al., CVPR 2021): the test
accuracy and parameter count of all 3^8 = 6561 architectures of a MobileNetV2-like macro space,
looked up in the published table. Every objective is minimised.

The specs name these functions as ``../problems.py:NAME``; a function feeding several objectives
returns a mapping from objective name to value (one call per trial).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

#: environment variable that overrides where the NAS-Bench-Macro table is read from
NASBENCH_MACRO_ENV = "NAGO_NASBENCH_MACRO"
NASBENCH_MACRO_LAYERS = 8
#: the default table: ../shared/data beside the repository (absent in a user's clone)
NASBENCH_MACRO_DEFAULT = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "nas-bench-macro" / "nas-bench-macro_cifar10.json"
)


def _vector(params: Mapping[str, Any]) -> np.ndarray:
    """x1..xn as an array (n,), ordered by the number after the x (so x10 follows x9)."""
    names = sorted(params, key=lambda k: (len(k), k))
    return np.array([float(params[k]) for k in names])


# --- ZDT and DTLZ ------------------------------------------------------------------------------------


def zdt1_values(x: np.ndarray) -> np.ndarray:
    """ZDT1 of points ``x`` (k x n, n >= 2) in [0, 1]^n: (f1, f2) per row, k x 2."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    f1 = x[:, 0]
    g = 1.0 + 9.0 * x[:, 1:].sum(axis=1) / (x.shape[1] - 1)
    return np.column_stack([f1, g * (1.0 - np.sqrt(f1 / g))])


def zdt2_values(x: np.ndarray) -> np.ndarray:
    """ZDT2 of points ``x`` (k x n, n >= 2) in [0, 1]^n: (f1, f2) per row, k x 2."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    f1 = x[:, 0]
    g = 1.0 + 9.0 * x[:, 1:].sum(axis=1) / (x.shape[1] - 1)
    return np.column_stack([f1, g * (1.0 - (f1 / g) ** 2)])


def dtlz2_values(x: np.ndarray, m: int = 3) -> np.ndarray:
    """DTLZ2 with ``m`` objectives of points ``x`` (k x n, n >= m) in [0, 1]^n: k x m.

    The last n - m + 1 variables are the distance ones: g = sum (x_i - 0.5)^2 over them, and
    f = (1 + g) times the point of the unit sphere whose angles are the first m - 1 variables times
    pi / 2. The front (g = 0) is the unit sphere's positive orthant.
    """
    x = np.atleast_2d(np.asarray(x, dtype=float))
    theta, dist = x[:, : m - 1] * (math.pi / 2), x[:, m - 1 :]
    g = ((dist - 0.5) ** 2).sum(axis=1)
    f = np.tile((1.0 + g)[:, None], (1, m))
    for i in range(m):  # f_i = (1+g) cos(t_1)...cos(t_{m-1-i}) sin(t_{m-i}), i = 0 .. m-1
        f[:, i] *= np.prod(np.cos(theta[:, : m - 1 - i]), axis=1)
        if i > 0:
            f[:, i] *= np.sin(theta[:, m - 1 - i])
    return f


def zdt1(params: Mapping[str, Any]) -> dict[str, float]:
    """ZDT1 of the parameters x1..xn: {"f1", "f2"}."""
    f = zdt1_values(_vector(params))[0]
    return {"f1": float(f[0]), "f2": float(f[1])}


def zdt2(params: Mapping[str, Any]) -> dict[str, float]:
    """ZDT2 of the parameters x1..xn: {"f1", "f2"}."""
    f = zdt2_values(_vector(params))[0]
    return {"f1": float(f[0]), "f2": float(f[1])}


def dtlz2(params: Mapping[str, Any]) -> dict[str, float]:
    """DTLZ2 with three objectives of the parameters x1..xn: {"f1", "f2", "f3"}."""
    f = dtlz2_values(_vector(params), 3)[0]
    return {"f1": float(f[0]), "f2": float(f[1]), "f3": float(f[2])}


# --- NAS-Bench-Macro -------------------------------------------------------------------------------


def nasbench_macro_path() -> Path:
    """Where the NAS-Bench-Macro table is read from: ``$NAGO_NASBENCH_MACRO``, else beside the repository."""
    env = os.environ.get(NASBENCH_MACRO_ENV)
    return Path(env) if env else NASBENCH_MACRO_DEFAULT


@lru_cache(maxsize=4)
def _load_table(path: str) -> tuple[dict[str, tuple[float, float]], float]:
    with open(path) as f:
        raw = json.load(f)
    table = {key: (float(v["mean_acc"]), float(v["params"])) for key, v in raw.items()}
    return table, max(p for _, p in table.values())


def nasbench_macro_table() -> tuple[dict[str, tuple[float, float]], float]:
    """{key: (mean test accuracy in %, parameter count)} and the table's largest parameter count.

    Read once per path (cached); raises FileNotFoundError naming the path and the variable when absent.
    """
    path = nasbench_macro_path()
    if not path.is_file():
        raise FileNotFoundError(f"NAS-Bench-Macro table not found at {path} (set ${NASBENCH_MACRO_ENV})")
    return _load_table(str(path))


def nasbench_macro_key(params: Mapping[str, Any]) -> str:
    """The table key of a point: the choices of layers l1..l8 (0 identity, 1 MB k3 e3, 2 MB k5 e6) as digits."""
    return "".join(str(int(params[f"l{i}"])) for i in range(1, NASBENCH_MACRO_LAYERS + 1))


def nasbench_macro_objectives(acc: float, n_params: float, max_params: float) -> tuple[float, float]:
    """(error, params) of one architecture: 1 - accuracy/100 and parameters / the table's largest."""
    return 1.0 - acc / 100.0, n_params / max_params


def nasbench_macro(params: Mapping[str, Any]) -> dict[str, float]:
    """NAS-Bench-Macro on CIFAR-10: {"error": 1 - mean_acc / 100, "params": params / max params}."""
    table, max_params = nasbench_macro_table()
    acc, n = table[nasbench_macro_key(params)]
    error, size = nasbench_macro_objectives(acc, n, max_params)
    return {"error": error, "params": size}


# --- true fronts -----------------------------------------------------------------------------------


def true_front(name: str, n: int | None = None) -> np.ndarray:
    """Points of a problem's true Pareto front (k x m, minimisation).

    ZDT1, ZDT2: ``n`` (default 10^4) points of the analytic front (f2 = 1 - sqrt(f1), 1 - f1^2), f1
    uniform in [0, 1]; their hypervolume to (1.1, 1.1) is within 1e-4 of the exact 0.8767 and 0.5433.
    DTLZ2: about ``n`` (default 10^6) points of the unit sphere's positive orthant on a grid of its
    two angles; hypervolume to (1.1, 1.1, 1.1) 0.8067, 0.1 % under the exact 1.1^3 - pi/6 = 0.8074.
    nasbench_macro: the exact front, the non-dominated rows of all 6561 architectures.
    """
    if name in ("zdt1", "zdt2"):
        f1 = np.linspace(0.0, 1.0, n or 10_000)
        f2 = 1.0 - np.sqrt(f1) if name == "zdt1" else 1.0 - f1**2
        return np.column_stack([f1, f2])
    if name == "dtlz2":
        side = max(round(math.sqrt(n or 1_000_000)), 2)
        a, b = np.meshgrid(np.linspace(0, 1, side), np.linspace(0, 1, side))
        x = np.column_stack([a.ravel(), b.ravel(), np.full((side * side, 4), 0.5)])
        return dtlz2_values(x, 3)
    if name == "nasbench_macro":
        from nago_spec.pareto import non_dominated

        table, max_params = nasbench_macro_table()
        F = np.array([nasbench_macro_objectives(acc, p, max_params) for acc, p in table.values()])
        return F[non_dominated(F)]
    raise KeyError(f"no true front for problem {name!r}")
