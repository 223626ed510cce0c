"""Tests of the search space: encode/decode round trips, GP features and the Sobol design."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nago_spec.space import CategoricalParam, FloatParam, IntParam, SearchSpace

SPACE = SearchSpace(
    (
        FloatParam("lr", 1e-4, 1.0, log=True),
        FloatParam("p", 0.1, 0.9),
        IntParam("nodes", 3, 10),
        IntParam("width", 8, 512, log=True),
        CategoricalParam("op", ("conv3", "conv5", "pool")),
        CategoricalParam("flag", (True, False)),
    )
)


def _random_values(rng: np.random.Generator) -> dict:
    return {
        "lr": float(math.exp(rng.uniform(math.log(1e-4), 0.0))),
        "p": float(rng.uniform(0.1, 0.9)),
        "nodes": int(rng.integers(3, 11)),
        "width": int(rng.integers(8, 513)),
        "op": ["conv3", "conv5", "pool"][int(rng.integers(3))],
        "flag": bool(rng.integers(2)),
    }


def test_values_round_trip_through_the_unit_cube():
    rng = np.random.default_rng(0)
    for _ in range(500):
        v = _random_values(rng)
        back = SPACE.from_unit(SPACE.to_unit(v))
        assert back["nodes"] == v["nodes"] and back["width"] == v["width"]
        assert back["op"] == v["op"] and back["flag"] is v["flag"]
        assert back["lr"] == pytest.approx(v["lr"], rel=1e-9)
        assert back["p"] == pytest.approx(v["p"], rel=1e-9)
        assert isinstance(back["nodes"], int) and isinstance(back["lr"], float)


def test_unit_points_decode_idempotently_and_stay_in_range():
    rng = np.random.default_rng(1)
    for _ in range(500):
        u = rng.uniform(-0.2, 1.2, SPACE.dim)  # outside the cube too: decoding clips
        v = SPACE.from_unit(u)
        assert 1e-4 <= v["lr"] <= 1.0 and 0.1 <= v["p"] <= 0.9
        assert 3 <= v["nodes"] <= 10 and 8 <= v["width"] <= 512
        assert SPACE.from_unit(SPACE.to_unit(v)) == v


def test_batch_versions_match_single_points():
    rng = np.random.default_rng(2)
    values = [_random_values(rng) for _ in range(20)]
    U = SPACE.to_unit_many(values)
    assert U.shape == (20, SPACE.dim)
    assert np.allclose(U, np.array([SPACE.to_unit(v) for v in values]))
    assert SPACE.from_unit_many(U) == [SPACE.from_unit(u) for u in U]


def test_ints_own_equal_slices_and_categoricals_equal_bins():
    p = IntParam("n", 3, 10)
    grid = (np.arange(80_000) + 0.5) / 80_000
    counts = np.bincount([p.from_unit(u) - 3 for u in grid])
    assert len(counts) == 8 and counts.min() == counts.max() == 10_000
    c = CategoricalParam("c", ("a", "b", "c", "d"))
    assert [c.from_unit(u) for u in (0.0, 0.24, 0.26, 0.74, 0.76, 1.0)] == ["a", "a", "b", "c", "d", "d"]
    assert c.to_unit("b") == pytest.approx(0.375)


def test_features_one_hot_categoricals_and_snap_ints():
    rng = np.random.default_rng(3)
    U = rng.random((50, SPACE.dim))
    X = SPACE.features(U)
    assert X.shape == (50, SPACE.n_features) == (50, 4 + 3 + 2)
    assert np.allclose(X[:, 0], U[:, 0]) and np.allclose(X[:, 1], U[:, 1])
    nodes = SPACE.params[2]
    assert np.allclose(X[:, 2], [nodes.to_unit(nodes.from_unit(u)) for u in U[:, 2]])
    assert np.allclose(X[:, 4:7].sum(axis=1), 1.0) and np.allclose(X[:, 7:9].sum(axis=1), 1.0)
    assert SPACE.feature_columns().tolist() == [0, 1, 2, 3, 4, 7]  # where each parameter's columns begin
    # two unit points that decode to the same parameters have the same features
    V = SPACE.snap(U)
    assert SPACE.from_unit_many(V) == SPACE.from_unit_many(U)
    assert np.allclose(SPACE.features(V), X)


def test_sobol_is_seeded_and_does_not_depend_on_n():
    a = SPACE.sobol(16, seed=7)
    assert a.shape == (16, SPACE.dim) and (a >= 0).all() and (a < 1).all()
    assert np.array_equal(a, SPACE.sobol(16, seed=7))
    assert not np.allclose(a, SPACE.sobol(16, seed=8))
    assert np.array_equal(SPACE.sobol(5, seed=7), a[:5])
    assert np.array_equal(SPACE.sobol(6, seed=7, skip=5), a[5:11])
    assert np.array_equal(SPACE.sobol(1, seed=7, skip=13)[0], a[13])
    assert SPACE.sobol(0, seed=7).shape == (0, SPACE.dim)


def test_invalid_spaces_are_errors():
    with pytest.raises(ValueError, match="at least one parameter"):
        SearchSpace(())
    with pytest.raises(ValueError, match="unique"):
        SearchSpace((FloatParam("a", 0, 1), IntParam("a", 0, 3)))
    with pytest.raises(ValueError, match=r"`low <= high` must hold, but got \(low=3, high=1\)"):
        IntParam("n", 3, 1)
    with pytest.raises(ValueError, match="low > 0"):
        FloatParam("lr", 0.0, 1.0, log=True)
    with pytest.raises(ValueError, match="not one of"):
        SPACE.to_unit({**_random_values(np.random.default_rng(0)), "op": "conv7"})


def test_degenerate_ranges_decode_to_their_single_value():
    space = SearchSpace((FloatParam("x", 2.0, 2.0), IntParam("n", 4, 4), CategoricalParam("c", ("only",))))
    assert space.from_unit(np.array([0.3, 0.9, 0.1])) == {"x": 2.0, "n": 4, "c": "only"}
    assert space.from_unit(space.to_unit({"x": 2.0, "n": 4, "c": "only"})) == {"x": 2.0, "n": 4, "c": "only"}
