"""Random search: a uniform point of the unit cube per trial, seeded by (run seed, trial id)."""

from __future__ import annotations

import numpy as np

from nago_spec.strategies.base import STREAM_RANDOM, Strategy, Trial


class RandomStrategy(Strategy):
    """Uniform sampling; trial k's point depends only on (seed, k), never on the order of asks."""

    def _ask(self, n: int, next_trial_id: int, history: list[Trial], pending: list[Trial]) -> np.ndarray:
        d = self.problem.space.dim
        return np.array([self.trial_rng(next_trial_id + k, STREAM_RANDOM).random(d) for k in range(n)])
