"""Child seeds derived from (run seed, trial, sample), so any network can be rebuilt alone."""

from __future__ import annotations

import numpy as np


def derive_seed(*keys: int) -> int:
    """A 31-bit seed that is a pure function of ``keys`` (numpy SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0] & 0x7FFFFFFF)


def sample_seed(run_seed: int, trial_id: int, sample: int) -> int:
    """The seed of architecture ``sample`` of trial ``trial_id``: its graphs, weights and data order."""
    return derive_seed(run_seed, trial_id, sample)
