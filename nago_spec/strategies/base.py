"""The strategy interface: public ask/tell over a private proposal hook, deterministic in the told set."""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from nago_spec.problem import Problem
from nago_spec.registry import did_you_mean
from nago_spec.seeds import derive_seed

log = logging.getLogger(__name__)

# stream tags, so the per-trial random draws of different uses never coincide
STREAM_RANDOM = 1
STREAM_SOBOL = 2
STREAM_FIT = 3
STREAM_NSGA = 4
STREAM_EVOLUTION = 5


@dataclass(frozen=True)
class Trial:
    """A trial as a strategy sees it: ``values`` is None while pending and when the trial FAILED."""

    id: int
    params: dict[str, Any]
    u: np.ndarray = field(repr=False)  # unit point (d,)
    values: dict[str, float] | None = None
    #: variance of each value's estimate where known (several samples of the point: their variance / count)
    noise: dict[str, float] | None = None
    #: the training budget of this evaluation (multi-fidelity runs), None otherwise
    budget: float | None = None

    @property
    def failed(self) -> bool:
        return self.values is None


class Strategy(ABC):
    """Proposes points of ``problem.space``; subclasses implement ``_ask`` (unit points) only.

    Determinism: proposals are a pure function of (seed, the told trials as a set, pending,
    next_trial_id). Told trials are kept by id, so the order of ``tell`` calls does not matter.
    A failed trial (``values=None``) counts as evaluated but carries no value.

    Multi-fidelity (trials told with a ``budget``): ``_ask`` sees only the trials of one budget,
    the largest with at least ``model_min_points`` complete trials (BOHB's rule, Falkner et al.
    2018), and none while no budget has that many, so the strategy proposes from its initial
    design. Why one budget and not one model over (parameters, budget): the values of one
    architecture at 30 and at 120 epochs are not one smooth function of the budget that a
    stationary kernel models well (rank changes between budgets are the reason to promote at
    all); a joint model needs a budget kernel (FABOLAS, BOCA) whose fit grows with every rung's
    data, where ours refits on the chosen rung only; and the paper's BOHB results use this rule.
    The cost is that low-budget data is ignored once a higher budget has enough points.
    """

    default_options: ClassVar[Mapping[str, Any]] = {}

    def __init__(
        self,
        problem: Problem,
        *,
        seed: int,
        initial: int = 8,
        batch: int = 2,
        options: Mapping[str, Any] | None = None,
    ):
        if initial < 0 or batch < 1:
            raise ValueError(f"`initial >= 0` and `batch >= 1` must hold, but got (initial={initial}, batch={batch})")
        self.problem = problem
        self.seed = int(seed)
        self.initial = int(initial)
        self.batch = int(batch)
        options = dict(options or {})
        unknown = [k for k in options if k not in self.default_options]
        if unknown:
            valid = tuple(self.default_options)
            raise ValueError(
                f"unknown option(s) for {type(self).__name__}: "
                + ", ".join(f"'{k}'{did_you_mean(k, valid)}" for k in unknown)
                + f"; valid: {', '.join(valid) or '(none)'}"
            )
        self.options: dict[str, Any] = {**self.default_options, **options}
        self._told: dict[int, Trial] = {}
        #: The last ask's stand-ins: trial id -> why its point is not the strategy's own proposal (bo's
        #: model failed and a random point was taken). A run stores, shows and reports them.
        self.fallbacks: dict[int, str] = {}

    def in_design(self, trial_id: int, complete: int) -> bool:
        """Whether trial ``trial_id`` takes a point of the initial design: one of the first ``initial``
        trials while fewer than ``initial`` trials are complete (a warm start's count: its trials
        are the design), and any trial while fewer than two are."""
        return (trial_id < self.initial and complete < self.initial) or complete < 2

    # -- public API ----------------------------------------------------------------------------
    def tell(
        self,
        trial_id: int,
        params: Mapping[str, Any],
        values: Mapping[str, float] | None,
        noise: Mapping[str, float] | None = None,
        budget: float | None = None,
    ) -> None:
        """Record a finished trial: ``values`` in the user's directions, or None when it FAILED.

        ``noise`` gives, where known, the variance of each value as an estimate (the values are means
        of several sampled architectures: their variance divided by their count); the bo strategy
        then models the objectives with that heteroscedastic noise. Telling the same id again
        replaces the earlier record.
        """
        space = self.problem.space
        missing = [n for n in space.names if n not in params]
        if missing:
            raise ValueError(f"trial {trial_id}: params lack {missing}")
        p = {n: params[n] for n in space.names}
        vals = None
        if values is not None:
            vals = {str(k): float(v) for k, v in values.items() if _is_number(v)}
        var = None
        if vals is not None and noise:
            var = {str(k): float(v) for k, v in noise.items() if _is_number(v) and float(v) >= 0 and k in vals}
        if int(trial_id) in self._told:
            log.debug("trial %d told again; the new record replaces the old", trial_id)
        self._told[int(trial_id)] = Trial(
            int(trial_id), p, space.to_unit(p), vals, var or None, None if budget is None else float(budget)
        )

    def ask(
        self, n: int, *, next_trial_id: int, pending: Sequence[tuple[int, Mapping[str, Any]]] = ()
    ) -> list[dict[str, Any]]:
        """Parameters for trials ``next_trial_id .. next_trial_id + n - 1``.

        ``pending`` holds (trial id, params) of trials proposed earlier that have not finished.
        """
        if n < 0:
            raise ValueError(f"`n >= 0` must hold, but got n={n}")
        self.fallbacks = {}
        if n == 0:
            return []
        space = self.problem.space
        pend = [
            Trial(int(i), {k: p[k] for k in space.names}, space.to_unit(p))
            for i, p in sorted(pending, key=lambda t: int(t[0]))
            if int(i) not in self._told
        ]
        history = self.history
        if any(t.budget is not None for t in history):
            chosen = self.model_budget()
            history = [t for t in history if t.budget is not None and t.budget == chosen]
        U = np.asarray(self._ask(n, int(next_trial_id), history, pend), dtype=float).reshape(n, space.dim)
        return space.from_unit_many(np.clip(U, 0.0, 1.0))

    @property
    def history(self) -> list[Trial]:
        """Every told trial, by id."""
        return [self._told[i] for i in sorted(self._told)]

    @property
    def model_min_points(self) -> int:
        """Complete trials a budget needs before proposals model it: d + 1 (BOHB's default), at least 3."""
        return max(3, self.problem.space.dim + 1)

    def model_budget(self) -> float | None:
        """The largest budget with at least ``model_min_points`` complete trials (None: no such budget)."""
        counts: dict[float, int] = {}
        for t in self._told.values():
            if t.budget is not None and t.values is not None:
                counts[t.budget] = counts.get(t.budget, 0) + 1
        enough = [b for b, c in counts.items() if c >= self.model_min_points]
        return max(enough) if enough else None

    # -- hook ----------------------------------------------------------------------------------
    @abstractmethod
    def _ask(self, n: int, next_trial_id: int, history: list[Trial], pending: list[Trial]) -> np.ndarray:
        """Unit points (n x d) for trials ``next_trial_id ..``; ``history`` and ``pending`` sorted by id."""

    # -- helpers for subclasses ----------------------------------------------------------------
    def trial_rng(self, trial_id: int, stream: int, *extra: int) -> np.random.Generator:
        """A generator that depends only on (seed, stream, trial_id, *extra)."""
        keys = [_u64(self.seed), stream, _u64(trial_id), *map(_u64, extra)]
        return np.random.default_rng(np.random.SeedSequence(keys))

    def child_seed(self, *keys: int) -> int:
        """A 31-bit seed derived from (seed, *keys), for libraries that take an int."""
        return derive_seed(_u64(self.seed), *map(_u64, keys))


def _u64(x: int) -> int:
    return int(x) & 0xFFFFFFFFFFFFFFFF


def _is_number(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
