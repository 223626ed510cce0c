"""Tests of the three-level generator: stages, width budget, seeding, graph sharing, description."""

from __future__ import annotations

import pickle
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest

from nago_spec.errors import SpecError
from nago_spec.generator import (
    Architecture,
    SEP3X3,
    HnagConfig,
    LevelConfig,
    RnagConfig,
    sample_architecture,
    stage_list,
)


def hnag(nt=6, kt=4, pt=0.5, nm=3, pm=0.5, nb=4, kb=2, pb=0.5, budget=20_000, **kw) -> HnagConfig:
    """An HNAG config in the paper's parameterisation (WS / ER / WS)."""
    return HnagConfig(LevelConfig("ws", {"nodes": nt, "k": kt, "p": pt}), LevelConfig("er", {"nodes": nm, "p": pm}),
                      LevelConfig("ws", {"nodes": nb, "k": kb, "p": pb}), param_budget=budget, **kw)


def sample(config: HnagConfig, seed: int = 0, size: tuple[int, int] = (32, 32), channels: int = 3,
           classes: int = 10) -> Architecture:
    return sample_architecture(config, seed, in_channels=channels, image_size=size, num_classes=classes)


# ------------------------------------------------------------------------------------------ stages (§1.7)


@pytest.mark.parametrize("n, expected", [
    (3, [0, 1, 2]),
    (4, [0, 0, 1, 2]),
    (5, [0, 0, 1, 1, 2]),
    (6, [0, 0, 1, 1, 2, 2]),
    (8, [0, 0, 0, 1, 1, 1, 2, 2]),
    (10, [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]),
])
def test_stage_table(n: int, expected: list[int]) -> None:
    assert stage_list(n, (1 / 3, 1 / 3, 1 / 3)) == expected


def test_every_stage_gets_a_cell() -> None:
    rng = np.random.default_rng(0)
    for n_stages in range(1, 6):
        for _ in range(40):
            ratios = tuple(rng.dirichlet(np.full(n_stages, 0.5)))
            for n in range(n_stages, 13):
                s = stage_list(n, ratios)
                assert s[0] == 0 and s[-1] == n_stages - 1, (n, ratios, s)
                assert all(b - a in (0, 1) for a, b in zip(s, s[1:])), (n, ratios, s)


def test_one_cell_per_stage_when_equal_and_fewer_cells_than_stages() -> None:
    assert stage_list(4, (0.7, 0.1, 0.1, 0.1)) == [0, 1, 2, 3]
    assert stage_list(3, (0.5, 0.25, 0.25)) == [0, 1, 2]
    assert stage_list(2, (1 / 3, 1 / 3, 1 / 3)) == [0, 1]  # stage 2 is absent
    assert stage_list(1, (1 / 3, 1 / 3, 1 / 3)) == [0]


# ------------------------------------------------------------------------------------------ width (§1.6)


def test_multiplier_on_the_nago_table() -> None:
    """NAGO.md §1.6 (4e6 budget, ratios 1:2:4, stages 1/3 each), computed by the fork on its own draws.

    Rows 1 and 4 do not depend on the draw; rows 2 and 3 do (which cells feed which, how many input
    ops each cell has), so their table value must lie in the range our draws give.
    """
    rows = [((3, 2, .5, 1, .5, 3, 2, .5), 9, 91), ((6, 4, .5, 1, .5, 6, 4, .5), 36, 42),
            ((10, 5, .5, 1, .5, 10, 5, .5), 100, 27), ((10, 5, .9, 10, .9, 10, 5, .9), 1000, 8)]
    for (nt, kt, pt, nm, pm, nb, kb, pb), ops, c1 in rows:
        cfg = hnag(nt, kt, pt, nm, pm, nb, kb, pb, budget=4_000_000)
        archs = [sample(cfg, seed) for seed in range(12 if ops < 1000 else 3)]
        mults = [a.multiplier for a in archs]
        assert all(a.summary()["op_nodes"] == ops for a in archs)
        assert all(a.stage_channels == (a.multiplier, 2 * a.multiplier, 4 * a.multiplier) for a in archs)
        assert min(mults) - 1 <= c1 <= max(mults) + 1, (c1, mults)
        if ops in (9, 1000):
            assert set(mults) == {c1}


def test_multiplier_floor_and_channel_rounding() -> None:
    a = sample(hnag(budget=1, channel_ratios=(0.3, 1.0, 2.6)))
    assert a.multiplier == 1 and a.stage_channels == (1, 1, 3)


# ------------------------------------------------------------------------------------------ seeding


def test_same_seed_same_architecture_and_pickle() -> None:
    cfg = hnag()
    a, b = sample(cfg, 7), sample(cfg, 7)
    assert a == b
    assert pickle.loads(pickle.dumps(a)) == a


def test_same_seed_in_another_process_without_torch() -> None:
    code = ("import sys, pickle; from nago_spec.generator import HnagConfig, LevelConfig, sample_architecture\n"
            "c = HnagConfig(LevelConfig('ws', {'nodes': 6, 'k': 4, 'p': 0.5}), LevelConfig('er', {'nodes': 3, 'p': 0.5}),"
            " LevelConfig('ws', {'nodes': 4, 'k': 2, 'p': 0.5}), param_budget=20000)\n"
            "a = sample_architecture(c, 7, in_channels=3, image_size=(32, 32), num_classes=10)\n"
            "assert 'torch' not in sys.modules\n"
            "sys.stdout.buffer.write(pickle.dumps(a))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    assert pickle.loads(out) == sample(hnag(), 7)


def test_different_seed_different_graphs() -> None:
    cfg = hnag()
    archs = [sample(cfg, s) for s in range(5)]
    assert len({(a.top, tuple(c.dag for c in a.cells)) for a in archs}) == 5


def test_independent_graphs_per_cell_vs_shared() -> None:
    own = sample(hnag(nm=6, pm=0.5, nb=6, kb=2, pb=0.5), 3)
    assert len({c.dag for c in own.cells}) > 1
    assert len({g.dag for c in own.cells for g in c.op_graphs}) > 1
    shared = sample(hnag(nm=6, pm=0.5, nb=6, kb=2, pb=0.5, share_graphs=True), 3)
    assert len({c.dag for c in shared.cells}) == 1
    assert len({g.dag for c in shared.cells for g in c.op_graphs}) == 1
    assert shared.share_graphs and not own.share_graphs


# ------------------------------------------------------------------------------------------ structure


def test_k_clamped_to_nodes_minus_one() -> None:
    a = sample(hnag(nt=3, kt=5, nb=3, kb=9))
    assert a.top.n == 3 and len(a.top.edges) == 3  # K = 2 on 3 nodes: the triangle
    assert all(len(g.dag.edges) == 3 for c in a.cells for g in c.op_graphs)


def test_single_mid_node() -> None:
    a = sample(hnag(nm=1))
    for c in a.cells:
        assert c.dag.n == 1 and c.dag.inputs == (0,) and c.dag.outputs == (0,)
    assert a.summary()["mid_nodes"] == a.top.n


def test_single_node_everywhere() -> None:
    cfg = HnagConfig(LevelConfig("ws", {"nodes": 1, "k": 2, "p": 0.5}), LevelConfig("er", {"nodes": 1, "p": 0.5}),
                     LevelConfig("ws", {"nodes": 1, "k": 2, "p": 0.5}), param_budget=100)
    a = sample(cfg)
    assert a.summary()["op_nodes"] == 1 and a.out_channels == a.stage_channels[0]


@pytest.mark.parametrize("size, stem, res", [
    ((32, 32), "small", ((32, 32), (16, 16), (8, 8))),
    ((8, 8), "small", ((8, 8), (4, 4), (2, 2))),
    ((7, 7), "small", ((7, 7), (4, 4), (2, 2))),
    ((13, 5), "small", ((13, 5), (7, 3), (4, 2))),
    ((1, 1), "small", ((1, 1), (1, 1), (1, 1))),
    ((64, 64), "large", ((16, 16), (8, 8), (4, 4))),
    ((224, 224), "large", ((56, 56), (28, 28), (14, 14))),
    ((41, 45), "large", ((11, 12), (6, 6), (3, 3))),
])
def test_resolutions(size, stem, res) -> None:
    a = sample(hnag(), size=size)
    assert a.stem == stem and a.stage_resolutions == res
    assert all(c.resolution == res[c.stage] for c in a.cells)


def test_cell_input_channels_are_the_last_predecessors() -> None:
    a = sample(hnag(nt=8, kt=4, pt=0.9), 5)
    for i, c in enumerate(a.cells):
        preds = a.top.preds[i]
        assert c.in_channels == (a.cells[preds[-1]].channels if preds else a.stage_channels[0])
        assert c.channels == a.stage_channels[c.stage]


def test_summary_and_networkx() -> None:
    a = sample(hnag(), 2)
    s = a.summary()
    assert s["params"] == a.param_count() and s["macs"] == a.mac_count() > 0
    g = a.to_networkx()
    assert g["top"].number_of_nodes() == s["top_cells"]
    assert g["mid"].number_of_nodes() == s["mid_nodes"]
    assert g["bottom"].number_of_nodes() == s["op_nodes"]
    assert all(nx.is_directed_acyclic_graph(x) for x in g.values())
    assert [d["stage"] for _, d in sorted(g["top"].nodes(data=True))] == list(s["stages"])
    assert all("channels" in d and "stage" in d for x in g.values() for _, d in x.nodes(data=True))
    assert sorted(g["top"].edges) == sorted(a.top.edges)


# ------------------------------------------------------------------------------------------ validation


def test_config_problems_reported_together() -> None:
    with pytest.raises(SpecError) as e:
        HnagConfig(LevelConfig("wss", {"nodes": 4}), LevelConfig("er", {"nodes": 0, "p": 0.5, "q": 1}),
                   LevelConfig("ws", {"nodes": 4, "p": 0.5}), param_budget=0,
                   stage_ratios=(0.5, 0.4), channel_ratios=(1.0, 2.0, 4.0), head_width=-1)
    text = str(e.value)
    for piece in ("did you mean 'ws'", "mid.nodes = 0", "mid.q: unknown", "bottom.k: missing",
                  "param_budget = 0", "sum to 1", "one ratio per stage", "head_width = -1"):
        assert piece in text, piece


def test_sample_arguments_validated() -> None:
    with pytest.raises(SpecError, match="in_channels = 0"):
        sample_architecture(hnag(), 0, in_channels=0, image_size=(8, 8), num_classes=2)
    with pytest.raises(SpecError, match="seed = -1"):
        sample_architecture(hnag(), -1, in_channels=1, image_size=(8, 8), num_classes=2)


# ------------------------------------------------------------------------------------- RNAG (RandWire)


def rnag(nodes=8, k=4, p=0.75, budget=20_000, **kw) -> RnagConfig:
    return RnagConfig(LevelConfig("ws", {"nodes": nodes, "k": k, "p": p}), param_budget=budget, **kw)


def test_rnag_structure() -> None:
    a = sample(rnag(channel_ratios=(1, 2, 4, 8)), 3, size=(64, 64))
    assert a.space == "rnag" and len(a.cells) == 4
    assert a.top.preds == ((), (0,), (1,), (2,)) and a.top.outputs == (3,)  # a chain of stages
    assert [c.stage for c in a.cells] == [0, 1, 2, 3]
    assert a.stage_channels == tuple(round(r * a.multiplier) for r in (1, 2, 4, 8))
    for s, c in enumerate(a.cells):
        assert c.dag.n == 8 and c.channels == a.stage_channels[s]
        assert c.in_channels == a.stage_channels[max(s - 1, 0)]  # input nodes take the previous stage's width
        assert c.resolution == a.stage_resolutions[s]
        assert all(g.dag.n == 1 and g.ops == (SEP3X3,) for g in c.op_graphs)
        assert all(j < i for i, ps in enumerate(c.dag.preds) for j in ps)  # oriented low -> high
    # RandWire's unique input: the previous stage's output, pooled once (none for stage 0), feeds every input node
    edges = [a.top_in_edges(i) for i in range(4)]
    assert [(e[0].src, e[0].steps, e[0].kind) for e in edges] == [(-1, 0, "pass"), (0, 1, "pass"), (1, 1, "pass"),
                                                                     (2, 1, "pass")]
    assert a.stage_resolutions == ((16, 16), (8, 8), (4, 4), (2, 2)) and a.stem == "large"


def test_rnag_graphs_independent_per_stage_and_seeded() -> None:
    cfg = rnag(nodes=12, k=4, p=0.8)
    a, b = sample(cfg, 7), sample(cfg, 7)
    assert a == b and pickle.loads(pickle.dumps(a)) == a
    assert len({c.dag for c in a.cells}) == 3  # each stage draws its own graph
    assert sample(cfg, 8).cells != a.cells


def test_rnag_width_from_budget() -> None:
    a = sample(rnag(nodes=6, k=2, p=0.0, budget=50_000), 0)  # p = 0: ring lattice, 1 input node, 1 output node
    cr = (1.0, 2.0, 4.0)
    base = 0.0
    for s, c in enumerate(a.cells):
        cin = cr[max(s - 1, 0)]
        base += sum(9 * (cin if not ps else cr[s]) + (cin if not ps else cr[s]) * cr[s] for ps in c.dag.preds)
    assert a.multiplier == max(1, int((50_000 / base) ** 0.5))
    assert sample(rnag(budget=1), 0).multiplier == 1


def test_rnag_summary_networkx_and_dispatch() -> None:
    a = sample(rnag(nodes=5), 1)
    s = a.summary()
    assert s["space"] == "rnag" and s["top_cells"] == 3 and s["mid_nodes"] == s["op_nodes"] == 15
    g = a.to_networkx()
    assert {d["op"] for _, d in g["bottom"].nodes(data=True)} == {"sep3x3"}
    assert sample(hnag(), 0).space == "hnag"


def test_rnag_config_problems() -> None:
    with pytest.raises(SpecError) as e:
        RnagConfig(LevelConfig("er", {"nodes": 0}), param_budget=0, channel_ratios=(), head_width=-1)
    for piece in ("stage.nodes = 0", "stage.p: missing", "param_budget = 0", "at least one stage", "head_width = -1"):
        assert piece in str(e.value), piece
    with pytest.raises(SpecError, match="seed = -1"):
        sample(rnag(), -1)
