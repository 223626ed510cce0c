"""Shared test fixtures: one torch thread, and the real data sets in ../shared/data when present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The ../shared/data folder beside the repository; skips where it is absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data sets not found at {SHARED_DATA} (only present beside the dev checkout)")
    return SHARED_DATA


TINY_SPEC = """
version = 1
name = "tiny"
seed = 0

[data]
dataset = "digits"
val_fraction = 0.2

[space]
kind = "hnag"
param_budget = 3000
head_width = 16

[space.top]
nodes = [3, 4]
k = 2
p = [0.1, 0.9]
[space.mid]
nodes = [1, 2]
p = 0.5
[space.bottom]
nodes = 3
k = 2
p = [0.1, 0.9]

[train]
epochs = 1
batch_size = 64
lr = 0.1

[[objectives]]
name = "error"
[[objectives]]
name = "params"

[search]
strategy = "bo"
budget = 4
initial = 2
batch = 2

[run]
backend = "local"

[export]
final_epochs = 1
max_models = 1
samples = 2
"""


@pytest.fixture
def tiny_spec(tmp_path) -> Path:
    """A network spec that runs end to end in seconds (digits, 4 trials of one epoch)."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SPEC)
    return path
