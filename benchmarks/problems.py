"""Objective callables and true Pareto fronts of the optimiser benchmark's problems (benchmarks/specs/).

- ZDT1, ZDT2 (Zitzler, Deb and Thiele 2000) and DTLZ2 (Deb, Thiele, Laumanns and Zitzler 2002) in
  their standard definitions on x in [0, 1]^n;
- ZDT3 (disconnected front), DTLZ7 (3 objectives, four disconnected regions), Kursawe (3 variables
  in [-5, 5], disconnected) and C2-DTLZ2 (DTLZ2 with 2 objectives and one constraint that leaves three
  arcs of the front feasible), evaluated by pymoo's implementations;
- a noisy ZDT1: Gaussian noise of sd 0.05 on both objectives, a fixed draw per point (seeded by the
  point's bytes), scored on the noise-free values;
- NAS-Bench-Macro (Su et al., CVPR 2021): the test accuracy and parameter count of all 3^8 = 6561
  architectures of a MobileNetV2-like macro space, looked up in the published table;
- AnalogNAS-Bench's NAS-Bench-201 table (IBM): 15625 cells on CIFAR-10 with their accuracy after
  standard training and after 8-bit post-training quantisation; the parameter count is computed
  exactly from the cell's operations.

Every objective is minimised.

The specs name these functions as ``../problems.py:NAME``; a function feeding several objectives
returns a mapping from objective name to value (one call per trial).
"""

from __future__ import annotations

import csv
import hashlib
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
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NASBENCH_MACRO_DEFAULT = SHARED_DATA / "nas-bench-macro" / "nas-bench-macro_cifar10.json"
#: environment variable that overrides where the AnalogNAS-Bench NB201 table is read from
NB201_ENV = "NAGO_NB201_TABLE"
NB201_DEFAULT = SHARED_DATA / "analognas-bench" / "analognas-bench_nb201_cifar10.csv"
#: sd of the noise of the noisy ZDT1
NOISE_SD = 0.05


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


@lru_cache(maxsize=None)
def _pymoo(name: str, **kwargs: Any) -> Any:
    from pymoo.problems import get_problem

    return get_problem(name, **kwargs)


def _pymoo_values(name: str, params: Mapping[str, Any], **kwargs: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """pymoo's (F, G) of one point given as x1..xn (G None without constraints)."""
    problem = _pymoo(name, **kwargs)
    out = problem.evaluate(_vector(params)[None, :], return_as_dictionary=True)
    G = out.get("G")
    return np.asarray(out["F"], dtype=float)[0], None if G is None or np.size(G) == 0 else np.asarray(G)[0]


def zdt3(params: Mapping[str, Any]) -> dict[str, float]:
    """ZDT3 of the parameters x1..xn in [0, 1] (pymoo): {"f1", "f2"}; the front is five disconnected pieces."""
    f, _ = _pymoo_values("zdt3", params, n_var=len(params))
    return {"f1": float(f[0]), "f2": float(f[1])}


def dtlz7(params: Mapping[str, Any]) -> dict[str, float]:
    """DTLZ7 with three objectives of x1..xn in [0, 1] (pymoo): {"f1", "f2", "f3"}; four disconnected regions."""
    f, _ = _pymoo_values("dtlz7", params, n_var=len(params), n_obj=3)
    return {"f1": float(f[0]), "f2": float(f[1]), "f3": float(f[2])}


def kursawe(params: Mapping[str, Any]) -> dict[str, float]:
    """Kursawe (1991) of x1..x3 in [-5, 5] (pymoo): {"f1", "f2"}; a disconnected front."""
    f, _ = _pymoo_values("kursawe", params)
    return {"f1": float(f[0]), "f2": float(f[1])}


def c2dtlz2(params: Mapping[str, Any]) -> dict[str, float]:
    """C2-DTLZ2 with two objectives of x1..xn in [0, 1] (pymoo, radius 0.2): {"f1", "f2", "c"}, feasible when
    c <= 0 (near the two ends and the middle of the quarter circle)."""
    f, g = _pymoo_values("c2dtlz2", params, n_var=len(params), n_obj=2)
    return {"f1": float(f[0]), "f2": float(f[1]), "c": float(g[0])}


def point_noise(params: Mapping[str, Any], m: int, sd: float = NOISE_SD) -> np.ndarray:
    """A fixed Gaussian draw (m,) of sd ``sd`` for one point, seeded by the bytes of its values: the same
    point always gets the same noise, distinct points independent noise, with no global random state."""
    digest = hashlib.sha256(_vector(params).tobytes()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little")).normal(0.0, sd, m)


def zdt1_noisy(params: Mapping[str, Any]) -> dict[str, float]:
    """ZDT1 plus Gaussian noise of sd 0.05 on both objectives (see ``point_noise``): {"f1", "f2"}."""
    f = zdt1_values(_vector(params))[0] + point_noise(params, 2)
    return {"f1": float(f[0]), "f2": float(f[1])}


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


# --- NAS-Bench-201 (AnalogNAS-Bench) --------------------------------------------------------------

NB201_EDGES = 6
#: operations in AnalogNAS-Bench's order: 0 skip_connect, 1 none, 2 nor_conv_3x3, 3 nor_conv_1x1, 4 avg_pool_3x3
NB201_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")


def nb201_path() -> Path:
    """Where the AnalogNAS-Bench table is read from: ``$NAGO_NB201_TABLE``, else beside the repository."""
    env = os.environ.get(NB201_ENV)
    return Path(env) if env else NB201_DEFAULT


@lru_cache(maxsize=4)
def _load_nb201(path: str) -> dict[str, tuple[float, float]]:
    with open(path, newline="") as f:
        return {r["op_indices"]: (float(r["baseline_accuracy"]), float(r["ptq_accuracy"])) for r in csv.DictReader(f)}


def nb201_table() -> dict[str, tuple[float, float]]:
    """{op_indices: (test accuracy in %, accuracy after 8-bit post-training quantisation in %)}, cached."""
    path = nb201_path()
    if not path.is_file():
        raise FileNotFoundError(f"AnalogNAS-Bench table not found at {path} (set ${NB201_ENV})")
    return _load_nb201(str(path))


def nb201_params(ops: str) -> int:
    """Parameters of the NAS-Bench-201 CIFAR-10 network (16, 32, 64 channels, 5 cells a stage) with the cell ``ops``.

    A cell's edge has 9C^2 + 2C parameters as ReLU-conv3x3-BN, C^2 + 2C as ReLU-conv1x1-BN, none
    otherwise. The rest is the same for every cell: the stem (conv 3->16 and BN), the two residual
    reduction blocks (two ReLU-conv3x3-BN and a 1x1 shortcut each), the last BN and the classifier,
    73306 parameters. All 3x3 convs gives 1,531,546 and no convs 73,306: NAS-Bench-201's range.
    """
    n3, n1 = ops.count("2"), ops.count("3")
    cells = sum(5 * (n3 * (9 * c * c + 2 * c) + n1 * (c * c + 2 * c)) for c in (16, 32, 64))
    stem = 3 * 16 * 9 + 2 * 16
    reductions = sum(9 * c * 2 * c + 2 * 2 * c + 9 * (2 * c) ** 2 + 2 * 2 * c + c * 2 * c for c in (16, 32))
    head = 2 * 64 + 64 * 10 + 10
    return cells + stem + reductions + head


NB201_MAX_PARAMS = 1_531_546


def nb201_key(params: Mapping[str, Any]) -> str:
    """The table key of a point: the operation of edges e1..e6 as digits (see NB201_OPS)."""
    return "".join(str(NB201_OPS.index(params[f"e{i}"])) for i in range(1, NB201_EDGES + 1))


def nb201_objectives(acc: float, ptq: float, ops: str) -> tuple[float, float, float]:
    """(error, int8_error, params) of one cell: 1 - accuracy/100 in float32 and after int8 PTQ, and
    parameters / the largest network's."""
    return 1.0 - acc / 100.0, 1.0 - ptq / 100.0, nb201_params(ops) / NB201_MAX_PARAMS


def nb201(params: Mapping[str, Any]) -> dict[str, float]:
    """NAS-Bench-201 on CIFAR-10 (AnalogNAS-Bench): {"error", "int8_error", "params"}."""
    key = nb201_key(params)
    acc, ptq = nb201_table()[key]
    error, int8_error, size = nb201_objectives(acc, ptq, key)
    return {"error": error, "int8_error": int8_error, "params": size}


# --- true fronts -----------------------------------------------------------------------------------


def true_front(name: str, n: int | None = None) -> np.ndarray:
    """Points of a problem's true Pareto front (k x m, minimisation).

    ZDT1, ZDT2: ``n`` (default 10^4) points of the analytic front (f2 = 1 - sqrt(f1), 1 - f1^2), f1
    uniform in [0, 1]; their hypervolume to (1.1, 1.1) is within 1e-4 of the exact 0.8767 and 0.5433.
    DTLZ2: about ``n`` (default 10^6) points of the unit sphere's positive orthant on a grid of its
    two angles; hypervolume to (1.1, 1.1, 1.1) 0.8067, 0.1 % under the exact 1.1^3 - pi/6 = 0.8074.
    ZDT3: the five pieces of f1 pymoo lists, ``n`` points in all. DTLZ7: the non-dominated points of a
    grid of (f1, f2) on g = 0 (f3 = 6 - f1 (1 + sin 3 pi f1) - f2 (1 + sin 3 pi f2)), about ``n``
    (default 250000) points. Kursawe: the non-dominated points of a long NSGA-II run (pymoo, population
    400, 400 generations, every generation's points kept). C2-DTLZ2: the feasible arcs of the unit
    circle, ``n`` points of the angle. nasbench_macro and nb201: the exact fronts of the tables.
    """
    if name in ("zdt1", "zdt2", "zdt1_noisy"):
        f1 = np.linspace(0.0, 1.0, n or 10_000)
        f2 = 1.0 - f1**2 if name == "zdt2" else 1.0 - np.sqrt(f1)
        return np.column_stack([f1, f2])
    if name == "zdt3":
        pieces = [(0.0, 0.0830015349), (0.182228780, 0.2577623634), (0.4093136748, 0.4538821041),
                  (0.6183967944, 0.6525117038), (0.8233317983, 0.8518328654)]
        from nago_spec.pareto import non_dominated

        f1 = np.concatenate([np.linspace(a, b, (n or 10_000) // len(pieces)) for a, b in pieces])
        F = np.column_stack([f1, 1.0 - np.sqrt(f1) - f1 * np.sin(10 * math.pi * f1)])
        return F[non_dominated(F)]  # the ends of pymoo's pieces are rounded: a few points fall just behind
    if name == "dtlz7":
        side = max(round(math.sqrt(n or 250_000)), 2)
        a = np.linspace(0.0, 1.0, side)
        h = a * (1.0 + np.sin(3 * math.pi * a))
        f3 = 6.0 - h[:, None] - h[None, :]  # f3[i, j] at f1 = a[i], f2 = a[j]
        # dominated on the grid: some (i', j') <= (i, j), other than (i, j), has f3 <= f3[i, j]
        below = np.minimum.accumulate(np.minimum.accumulate(f3, axis=0), axis=1)
        left = np.full_like(f3, np.inf)
        left[1:, :] = np.minimum(left[1:, :], below[:-1, :])
        left[:, 1:] = np.minimum(left[:, 1:], below[:, :-1])
        keep = f3 < left
        i, j = np.nonzero(keep)
        return np.column_stack([a[i], a[j], f3[keep]])
    if name == "kursawe":
        return _kursawe_front()
    if name == "c2dtlz2":
        theta = np.linspace(0.0, math.pi / 2, n or 100_000)
        F = np.column_stack([np.cos(theta), np.sin(theta)])
        from pymoo.problems.many.cdtlz import constraint_c2

        return F[constraint_c2(F, 0.2).reshape(-1) <= 0]
    if name == "nb201":
        from nago_spec.pareto import non_dominated

        F = np.array([nb201_objectives(acc, ptq, key) for key, (acc, ptq) in nb201_table().items()])
        return F[non_dominated(F)]
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


@lru_cache(maxsize=1)
def _kursawe_front() -> np.ndarray:
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.callback import Callback
    from pymoo.optimize import minimize

    from nago_spec.pareto import non_dominated

    class Keep(Callback):
        def __init__(self) -> None:
            super().__init__()
            self.F: list[np.ndarray] = []

        def notify(self, algorithm: Any) -> None:
            self.F.append(algorithm.pop.get("F"))

    keep = Keep()
    minimize(_pymoo("kursawe"), NSGA2(pop_size=400), ("n_gen", 400), seed=1, callback=keep, verbose=False)
    F = np.vstack(keep.F)
    F = F[non_dominated(F)]
    return np.unique(F, axis=0)
