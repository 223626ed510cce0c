"""benchmarks/compare_methods.py: the method specs it derives and the front it scores."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
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


def test_bo_options_reach_the_bo_methods_only_and_a_bad_one_stops_before_any_run(tmp_path, shared_data, monkeypatch,
                                                                                 capsys):
    m = load_benchmark("compare_methods")
    data = shared_data / "fashion-mnist"
    for method, (_, strategy, _) in m.METHODS.items():
        spec = load_spec(m.method_spec(method, tmp_path, pop_size=6, data=data, bo_options=["scalarise_every = 2"]))
        expected = {"bo": {"scalarise_every": 2}, "evolution": {"pop_size": 6}}.get(strategy, {})
        assert dict(spec.search.options) == expected
    ran = []
    monkeypatch.setattr(m, "run", lambda *a, **k: ran.append(a))
    for bad, why in (("no_such=1", "unknown option for strategy 'bo'"), ("scalarise_every=-1", "must be 0 (never)"),
                     ("scalarise_every", "give KEY=VALUE"), ("scalarise_every=[1", "give KEY=VALUE")):
        monkeypatch.setattr("sys.argv", ["compare_methods.py", "--methods", "hnag-bo,hnag-random", "--data", str(data),
                                         "--out", str(tmp_path / "out"), "--bo-option", bad])
        assert m.main() == 2
        err = capsys.readouterr().err
        assert why in err and len(err.strip().splitlines()) == 1, err
    assert not ran


def test_an_earlier_results_fronts_are_scored_in_one_box_with_the_new_runs():
    m = load_benchmark("compare_methods")
    val = np.array([[0.30, 10.0], [0.20, 20.0]])
    test = np.array([[0.32, 10.0], [0.22, 20.0]])
    runs = {("hnag-bo", 0): (val, test)}
    alone = m.summarise(runs, {("hnag-bo", 0): 5.0}, {("hnag-bo", 0): 0}, ["hnag-bo"], {"hnag-bo": 1})
    earlier_front = [[0.25, 15.0], [0.40, 5.0]]
    earlier = {"box": {"ideal": [0.25, 5.0], "worst": [0.60, 40.0]},
               "methods": {"hnag-random": {"test_hv": [0.9], "best_test_error": [0.25], "front_top": [[0.25, 15.0]],
                                           "wall_s": [7.0], "failed": [1], "front": {"0": earlier_front}},
                           "hnag-bo": {"test_hv": [0.9], "best_test_error": [0.3], "front_top": [[0.3, 9.0]],
                                       "wall_s": [6.0], "failed": [0], "front": {"0": [[0.3, 9.0]]}}}}
    joint = m.summarise(runs, {("hnag-bo", 0): 5.0}, {("hnag-bo", 0): 0}, ["hnag-bo"], {"hnag-bo": 1}, earlier)
    assert joint["box"] == {"ideal": [0.2, 5.0], "worst": [0.6, 40.0]}
    assert list(joint["methods"]) == ["hnag-bo", "hnag-random", "hnag-bo (earlier)"]
    # every front in the one box, by hand: (F - ideal) / (1.1 (worst - ideal)), reference (1, 1)
    scale = 1.1 * np.array([0.4, 35.0])

    def hv(F):
        from nago_spec.pareto import hypervolume
        return hypervolume((np.array(F) - [0.2, 5.0]) / scale, np.ones(2))

    assert joint["methods"]["hnag-bo"]["test_hv"] == pytest.approx([hv(test)])
    assert joint["methods"]["hnag-random"]["test_hv"] == pytest.approx([hv(earlier_front)])  # not the stored 0.9
    assert joint["methods"]["hnag-bo"]["test_hv"] != alone["methods"]["hnag-bo"]["test_hv"]  # the box grew
    assert joint["methods"]["hnag-random"]["val_hv"] == [None] and joint["methods"]["hnag-random"]["curve"] is None
    assert joint["methods"]["hnag-random"]["failed"] == [1] and joint["seeds"]["hnag-random"] == 1
