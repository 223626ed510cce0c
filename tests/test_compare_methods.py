"""benchmarks/compare_methods.py: the method specs it derives and the front it scores."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from conftest import load_benchmark

from nago_spec.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


def test_the_front_is_chosen_on_validation_and_scored_on_test():
    val = np.array([[0.10, 900.0], [0.20, 100.0], [0.15, 950.0], [0.30, 50.0]])
    test = np.array([[0.30, 900.0], [0.22, 100.0], [0.01, 950.0], [0.31, 50.0]])
    # trial 2 has the best test error, but validation does not choose it: the score must not see it
    assert load_benchmark("compare_methods").chosen_front(val, test).tolist() == [[0.30, 900.0], [0.22, 100.0], [0.31, 50.0]]


def test_each_method_is_its_spec_with_its_strategy_and_an_absolute_data_path(tmp_path, shared_data):
    m = load_benchmark("compare_methods")
    data = shared_data / "fashion-mnist"
    for method, (source, strategy, _) in m.METHODS.items():
        spec = load_spec(m.method_spec(method, tmp_path, pop_size=6, data=data))
        original = load_spec(ROOT / source)
        assert spec.search.strategy == strategy and spec.data.path == data.resolve()
        # the fair HNAG of experiment 2 differs from specs/12 in its conv type only
        conv_type = {"hnag-sep-bo": "separable", "hnag-mixed-bo": ("normal", "separable")}.get(method, "normal")
        assert spec.space.conv_type == conv_type
        assert spec.search.record == ("test_error",)
        assert dataclasses.replace(spec.space, conv_type=original.space.conv_type) == original.space
        assert spec.search.budget == original.search.budget and spec.train == original.train
        assert dict(spec.search.options) == ({"pop_size": 6} if strategy == "evolution" else {})
