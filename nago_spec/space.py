"""The search space: typed parameters, the unit-cube encoding, GP features and Sobol designs."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np


@dataclass(frozen=True)
class FloatParam:
    """A real parameter in [low, high], searched on a log scale when ``log`` (then ``low > 0``)."""

    name: str
    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"{self.name}: `low <= high` must hold, but got (low={self.low}, high={self.high})")
        if self.log and not self.low > 0:
            raise ValueError(f"{self.name}: `low > 0` must hold for log=True, but got low={self.low}")

    def _bounds(self) -> tuple[float, float]:
        return (math.log(self.low), math.log(self.high)) if self.log else (float(self.low), float(self.high))

    def to_unit(self, value: Any) -> float:
        a, b = self._bounds()
        if b == a:
            return 0.5
        x = math.log(value) if self.log else float(value)
        return min(max((x - a) / (b - a), 0.0), 1.0)

    def from_unit(self, u: float) -> float:
        a, b = self._bounds()
        x = a + min(max(float(u), 0.0), 1.0) * (b - a)
        value = math.exp(x) if self.log else x
        return min(max(value, float(self.low)), float(self.high))  # exp/log may overshoot by an ulp


@dataclass(frozen=True)
class IntParam:
    """An integer parameter in [low, high]; each integer owns an equal-width slice of [0, 1].

    With ``log`` the slices are equal in log space.
    """

    name: str
    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"{self.name}: `low <= high` must hold, but got (low={self.low}, high={self.high})")
        if self.log and not self.low >= 1:
            raise ValueError(f"{self.name}: `low >= 1` must hold for log=True, but got low={self.low}")

    def _bounds(self) -> tuple[float, float]:
        # widen by half a step so the end points get a whole slice, as the inner integers do (Optuna's rule)
        a, b = self.low - 0.5, self.high + 0.5
        return (math.log(a), math.log(b)) if self.log else (a, b)

    def to_unit(self, value: Any) -> float:
        a, b = self._bounds()
        v = min(max(int(round(float(value))), self.low), self.high)
        x = math.log(v) if self.log else float(v)
        return min(max((x - a) / (b - a), 0.0), 1.0)

    def from_unit(self, u: float) -> int:
        a, b = self._bounds()
        x = a + min(max(float(u), 0.0), 1.0) * (b - a)
        value = math.exp(x) if self.log else x
        return int(min(max(round(value), self.low), self.high))


@dataclass(frozen=True)
class CategoricalParam:
    """A choice among ``choices``; choice i owns the bin [i/k, (i+1)/k) of [0, 1]."""

    name: str
    choices: tuple[Any, ...]

    def __post_init__(self) -> None:
        if len(self.choices) == 0:
            raise ValueError(f"{self.name}: at least one choice is needed")

    def index(self, value: Any) -> int:
        for i, c in enumerate(self.choices):
            # `type(c) is type(value)` keeps True apart from 1
            if c == value and type(c) is type(value):
                return i
        for i, c in enumerate(self.choices):
            if c == value:
                return i
        raise ValueError(f"{self.name}: {value!r} is not one of {self.choices}")

    def to_unit(self, value: Any) -> float:
        return (self.index(value) + 0.5) / len(self.choices)

    def from_unit(self, u: float) -> Any:
        k = len(self.choices)
        return self.choices[min(max(int(math.floor(float(u) * k)), 0), k - 1)]


Param = Union[FloatParam, IntParam, CategoricalParam]


@dataclass(frozen=True)
class SearchSpace:
    """An ordered tuple of parameters and the encodings the optimiser works in.

    Points live in the unit cube [0, 1]^d (d = number of parameters). The GP sees ``features``:
    numeric dimensions as their (snapped) unit value and categoricals one-hot, d' columns in all.
    """

    params: tuple[Param, ...]

    def __post_init__(self) -> None:
        if len(self.params) == 0:
            raise ValueError("a search space needs at least one parameter")
        names = [p.name for p in self.params]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"parameter names must be unique, but got duplicates {dup}")

    @property
    def dim(self) -> int:
        return len(self.params)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def n_features(self) -> int:
        """d', the number of columns of ``features``."""
        return int(sum(self._feature_widths()))

    def to_unit(self, values: Mapping[str, Any]) -> np.ndarray:
        """The unit point (d,) of a parameter mapping; raises KeyError for a missing name."""
        return np.array([p.to_unit(values[p.name]) for p in self.params], dtype=float)

    def from_unit(self, u: np.ndarray) -> dict[str, Any]:
        """The parameters of unit point ``u`` (d,), clipped to [0, 1]; ints rounded, categoricals binned."""
        u = np.asarray(u, dtype=float).reshape(-1)
        if u.shape[0] != self.dim:
            raise ValueError(f"expected a unit point of {self.dim} values, got {u.shape[0]}")
        return {p.name: p.from_unit(x) for p, x in zip(self.params, u)}

    def to_unit_many(self, values: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Unit points (n x d) of n parameter mappings."""
        return np.array([self.to_unit(v) for v in values], dtype=float).reshape(len(values), self.dim)

    def from_unit_many(self, U: np.ndarray) -> list[dict[str, Any]]:
        """Parameter mappings of the unit points ``U`` (n x d)."""
        return [self.from_unit(u) for u in np.asarray(U, dtype=float).reshape(-1, self.dim)]

    def snap(self, U: np.ndarray) -> np.ndarray:
        """``U`` (n x d) with each point moved to the canonical unit point of the parameters it decodes to."""
        U = np.clip(np.asarray(U, dtype=float).reshape(-1, self.dim), 0.0, 1.0)
        out = U.copy()
        for j, p in enumerate(self.params):
            if not isinstance(p, FloatParam):
                out[:, j] = [p.to_unit(p.from_unit(x)) for x in U[:, j]]
        return out

    def features(self, U: np.ndarray) -> np.ndarray:
        """The GP input encoding (n x d') of unit points ``U`` (n x d).

        Floats keep their unit value, ints are snapped to the unit position of their rounded value,
        categoricals become one-hot columns (one per choice) in the parameter's place.
        """
        U = np.clip(np.asarray(U, dtype=float).reshape(-1, self.dim), 0.0, 1.0)
        cols: list[np.ndarray] = []
        for j, p in enumerate(self.params):
            if isinstance(p, CategoricalParam):
                k = len(p.choices)
                idx = np.clip(np.floor(U[:, j] * k).astype(int), 0, k - 1)
                cols.append(np.eye(k)[idx])
            elif isinstance(p, IntParam):
                cols.append(np.array([p.to_unit(p.from_unit(x)) for x in U[:, j]]).reshape(-1, 1))
            else:
                cols.append(U[:, j : j + 1])
        return np.hstack(cols)

    def feature_columns(self) -> np.ndarray:
        """For each parameter, the index of its first column in ``features``."""
        return np.concatenate([[0], np.cumsum(self._feature_widths())[:-1]]).astype(int)

    def _feature_widths(self) -> list[int]:
        """Columns of each parameter in ``features``: one per choice of a categorical, else one."""
        return [len(p.choices) if isinstance(p, CategoricalParam) else 1 for p in self.params]

    def sobol(self, n: int, seed: int, skip: int = 0) -> np.ndarray:
        """Points ``skip .. skip+n-1`` (n x d) of the scrambled Sobol sequence seeded by ``seed``.

        Point i of the sequence does not depend on ``n``: ``sobol(a+b, s)[a:] == sobol(b, s, skip=a)``.
        """
        if n < 0 or skip < 0:
            raise ValueError(f"`n >= 0` and `skip >= 0` must hold, but got (n={n}, skip={skip})")
        from scipy.stats import qmc  # imported here: loading a spec must not pay for scipy.stats

        engine = qmc.Sobol(self.dim, scramble=True, seed=np.random.default_rng(_entropy(seed)))
        with warnings.catch_warnings():
            # balance needs powers of two; a sequence continued trial by trial cannot have them
            warnings.simplefilter("ignore", UserWarning)
            if skip:
                engine.fast_forward(skip)
            return engine.random(n) if n else np.zeros((0, self.dim))


def _entropy(seed: int) -> int:
    """A non-negative integer for SeedSequence from any int seed."""
    return int(seed) & 0xFFFFFFFFFFFFFFFF
