"""Tests of the three-level generator: stages, width budget, seeding, graph sharing, description."""

from __future__ import annotations

import itertools
import math
import pickle
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest

from nago_spec.errors import SpecError
from nago_spec.generator import (
    SEP3X3,
    Architecture,
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
                assert all(b - a in (0, 1) for a, b in itertools.pairwise(s)), (n, ratios, s)


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


# ----------------------------------------------------------------- extended knobs (θ_M, θ_op, conv type)


def test_operations_follow_their_distribution_and_outputs_are_convs() -> None:
    cfg = hnag(nt=6, nm=3, nb=8, kb=4, ops={"conv3x3": 1.0, "avgpool3x3": 3.0, "conv5x5": 0.0})
    inner, outputs = [], []
    for seed in range(30):
        for c in sample(cfg, seed).cells:
            for g in c.op_graphs:
                for b, op in enumerate(g.ops):
                    (outputs if b in g.dag.outputs else inner).append(op.name)
    assert set(outputs) == {"conv3x3"}  # only convs may end a bottom graph (NAGO.md §1.3)
    assert "conv5x5" not in inner and len(inner) > 500
    assert inner.count("avgpool3x3") / len(inner) == pytest.approx(0.75, abs=0.05)


def test_merges_follow_their_distribution_only_where_there_are_inputs_to_merge() -> None:
    merge = {"sum": 1.0, "concat": 1.0, "attention": 2.0}
    cfg = HnagConfig(LevelConfig("ws", {"nodes": 8, "k": 4, "p": 0.5}, merge), LevelConfig("er", {"nodes": 4, "p": 0.8}),
                     LevelConfig("ws", {"nodes": 6, "k": 4, "p": 0.5}, {"concat": 1.0}), param_budget=20_000)
    drawn = []
    for seed in range(40):
        a = sample(cfg, seed)
        drawn += [m for m, ps in zip(a.top_merges, a.top.preds) if len(ps) > 1]
        assert all((m == "pass") == (len(ps) < 2) for m, ps in zip(a.top_merges, a.top.preds))
        for c in a.cells:
            assert set(c.merges) <= {"pass", "sum"}
            assert all(set(g.merges) <= {"pass", "concat"} for g in c.op_graphs)
    assert drawn.count("attention") / len(drawn) == pytest.approx(0.5, abs=0.08)


def test_degenerate_knobs_leave_the_graphs_as_they_are() -> None:
    """θ_M = sum and θ_op = conv3x3 (the paper's fixed values), however written, draw nothing new."""
    plain = sample(hnag(), 5)
    spelled = sample(HnagConfig(*(LevelConfig(lv.graph, lv.params, {"sum": 1.0, "concat": 0.0})
                                  for lv in (hnag().top, hnag().mid, hnag().bottom)),
                                param_budget=20_000, ops={"conv3x3": 2.0, "avgpool5x5": 0.0}), 5)
    assert spelled == plain
    wider = sample(hnag(ops={"conv5x5": 1.0}), 5)
    assert wider.top == plain.top and [c.dag for c in wider.cells] == [c.dag for c in plain.cells]
    assert {op.name for c in wider.cells for g in c.op_graphs for op in g.ops} == {"conv5x5"}


def test_all_zero_weights_draw_uniformly_from_the_named_options() -> None:
    cfg = hnag(nb=8, kb=4, ops={"conv1x1": 0.0, "avgpool3x3": 0.0})
    names = {op.name for seed in range(10) for c in sample(cfg, seed).cells for g in c.op_graphs for op in g.ops}
    assert names == {"conv1x1", "avgpool3x3"}
    only_pools = hnag(ops={"avgpool3x3": 1.0})  # output ops fall back to conv3x3
    a = sample(only_pools, 0)
    assert all(g.ops[b].name == "conv3x3" for c in a.cells for g in c.op_graphs for b in g.dag.outputs)


def test_conv_type_and_kernels() -> None:
    a = sample(hnag(nb=8, kb=4, ops={"conv3x1": 1.0, "conv1x3": 1.0, "conv1x1": 1.0}, conv_type="separable"), 1)
    ops = {op for c in a.cells for g in c.op_graphs for op in g.ops}
    assert {op.name for op in ops} == {"sep3x1", "sep1x3", "sep1x1"} and all(op.separable for op in ops)
    assert {op.kernel for op in ops} == {(3, 1), (1, 3), (1, 1)}


def test_shared_graphs_share_their_operations_and_merges() -> None:
    cfg = hnag(nm=4, pm=0.9, nb=6, kb=4, share_graphs=True, ops={"conv3x3": 1.0, "avgpool3x3": 1.0})
    a = sample(cfg, 2)
    assert len({g for c in a.cells for g in c.op_graphs}) == 1
    assert len({c.merges for c in a.cells}) == 1


def test_budget_counts_concat_inputs_and_not_pools() -> None:
    """§1.6 base in ratio units: a concat-merged input counts the sum of its inputs' ratios; pools count 0.

    Triangle of 3 cells (stages 0, 1, 2; ratios 1, 2, 4), one conv5x5 op per cell, top merge concat:
    base = 25·(1·1) + 25·(1·2) + 25·((1 + 2)·4) = 375, so a 37 500 budget gives multiplier 10.
    """
    levels = [LevelConfig("ws", {"nodes": 3, "k": 2, "p": 0.5}, {"concat": 1.0}), LevelConfig("er", {"nodes": 1, "p": 0.5}),
              LevelConfig("ws", {"nodes": 1, "k": 2, "p": 0.5})]
    a = sample(HnagConfig(*levels, param_budget=37_500, ops={"conv5x5": 1.0}), 0)
    assert a.top.preds == ((), (0,), (0, 1)) and a.multiplier == 10
    assert [c.in_channels for c in a.cells] == [10, 10, 30]
    pools = [LevelConfig("ws", {"nodes": 3, "k": 2, "p": 0.5}), LevelConfig("er", {"nodes": 1, "p": 0.5}),
             LevelConfig("ws", {"nodes": 3, "k": 2, "p": 0.5})]
    b = sample(HnagConfig(*pools, param_budget=37_500, ops={"conv5x5": 1.0, "avgpool3x3": 1e9}), 0)
    convs = [(i, b_) for i, c in enumerate(b.cells) for g in c.op_graphs for b_, op in enumerate(g.ops)
             if op.kind == "conv"]
    assert convs == [(0, 2), (1, 2), (2, 2)]  # only the output op of each cell is a conv
    assert b.multiplier == int(math.sqrt(37_500 / (25 * (1 + 4 + 16))))  # = 8: the pools add nothing


def test_extended_config_problems() -> None:
    with pytest.raises(SpecError) as e:
        HnagConfig(LevelConfig("ws", {"nodes": 4, "k": 2, "p": 0.5}, {"summ": 1.0}),
                   LevelConfig("er", {"nodes": 2, "p": 0.5}, {"sum": -1.0}),
                   LevelConfig("ws", {"nodes": 4, "k": 2, "p": 0.5}, {}),
                   param_budget=100, ops={"conv7x7": 1.0, "conv3x3": float("nan")}, conv_type="dense")
    text = str(e.value)
    for piece in ("top.merge: unknown merge 'summ'", "mid.merge.sum = -1.0", "bottom.merge = {}",
                  "ops: unknown operation 'conv7x7'", "ops.conv3x3 = nan", "conv_type = 'dense'"):
        assert piece in text, piece


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
    edges = [a.top_merge(i).edges for i in range(4)]
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
