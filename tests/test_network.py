"""Tests of the torch network: counts against torch, seeding, shapes, gates, merges, ONNX round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from nago_spec.generator import (
    MERGE_NAMES,
    OP_NAMES,
    Architecture,
    HnagConfig,
    LevelConfig,
    RnagConfig,
    sample_architecture,
)
from nago_spec.network import ConvOp, Graph, Normalize, build_network

SIZES = [(8, 8), (28, 28), (32, 32), (64, 64), (7, 7), (13, 13), (1, 1), (5, 9), (40, 41)]


def hnag(nt=6, kt=4, pt=0.5, nm=3, pm=0.5, nb=4, kb=2, pb=0.5, budget=5_000, **kw) -> HnagConfig:
    return HnagConfig(LevelConfig("ws", {"nodes": nt, "k": kt, "p": pt}), LevelConfig("er", {"nodes": nm, "p": pm}),
                      LevelConfig("ws", {"nodes": nb, "k": kb, "p": pb}), param_budget=budget, **kw)


def random_weights(rng: np.random.Generator, names: tuple[str, ...]) -> dict[str, float]:
    """A random categorical distribution over a random subset of ``names`` (some weights zero)."""
    chosen = rng.choice(names, size=int(rng.integers(1, len(names) + 1)), replace=False)
    return {str(n): float(rng.choice([0.0, rng.uniform(0.1, 1.0)])) for n in chosen}


def random_level(rng: np.random.Generator, max_nodes: int) -> LevelConfig:
    n = int(rng.integers(1, max_nodes + 1))
    kind = rng.choice(["ws", "er", "ba"])
    merge = random_weights(rng, MERGE_NAMES) if rng.random() < 0.6 else {"sum": 1.0}
    if kind == "ws":
        params = {"nodes": n, "k": int(rng.integers(2, 6)), "p": float(rng.uniform(0.1, 0.9))}
    elif kind == "er":
        params = {"nodes": n, "p": float(rng.uniform(0.1, 0.9))}
    else:
        params = {"nodes": n, "m": int(rng.integers(1, 4))}
    return LevelConfig(str(kind), params, merge)


def random_rnag(rng: np.random.Generator) -> Architecture:
    n_stages = int(rng.integers(1, 5))
    cfg = RnagConfig(random_level(rng, 8), param_budget=int(rng.integers(300, 8000)),
                     channel_ratios=tuple(float(r) for r in rng.uniform(0.3, 4.0, n_stages)),
                     head_width=int(rng.choice([0, 0, int(rng.integers(1, 24))])))
    size = SIZES[int(rng.integers(len(SIZES)))]
    return sample_architecture(cfg, int(rng.integers(2**31)), in_channels=int(rng.choice([1, 3])),
                               image_size=size, num_classes=int(rng.integers(1, 12)))


def random_arch(rng: np.random.Generator) -> Architecture:
    if rng.random() < 0.25:
        return random_rnag(rng)
    n_stages = int(rng.integers(1, 5))
    cfg = HnagConfig(
        random_level(rng, 6), random_level(rng, 3), random_level(rng, 4),
        param_budget=int(rng.integers(300, 8000)),
        stage_ratios=tuple(rng.dirichlet(np.ones(n_stages))),
        channel_ratios=tuple(float(r) for r in rng.uniform(0.3, 4.0, n_stages)),
        head_width=int(rng.choice([0, 0, int(rng.integers(1, 24))])),
        share_graphs=bool(rng.integers(2)),
        ops=random_weights(rng, OP_NAMES) if rng.random() < 0.7 else {"conv3x3": 1.0},
        conv_type=str(rng.choice(["normal", "separable"])))
    size = SIZES[int(rng.integers(len(SIZES)))]
    return sample_architecture(cfg, int(rng.integers(2**31)), in_channels=int(rng.choice([1, 3])),
                               image_size=size, num_classes=int(rng.integers(1, 12)))


def hooked_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of one forward at batch 1, counted by torch: out.numel() * in/groups * kh * kw per conv."""
    total = 0

    def conv(m: nn.Conv2d, _, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    def linear(m: nn.Linear, _, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return total


def test_counts_match_torch_on_a_random_sweep() -> None:
    rng = np.random.default_rng(123)
    seen_stages, seen_sizes, seen_kinds, seen_ops, seen_merges = set(), set(), set(), set(), set()
    for _ in range(80):
        a = random_arch(rng)
        net = build_network(a, 0).eval()
        assert a.param_count() == sum(p.numel() for p in net.parameters()), a.summary()
        # the weights int8 stores in a byte each (int8_size_kb): every conv's and linear layer's
        assert a.weight_count() == sum(m.weight.numel() for m in net.modules()
                                       if isinstance(m, (nn.Conv2d, nn.Linear))), a.summary()
        x = torch.randn(1, a.in_channels, *a.image_size)
        assert a.mac_count() == hooked_macs(net, x), a.summary()
        with torch.no_grad():
            assert net(torch.randn(2, a.in_channels, *a.image_size)).shape == (2, a.num_classes)
        seen_stages.add(len(a.stage_channels))
        seen_sizes.add(a.image_size)
        seen_kinds.add(a.space)
        seen_ops |= set(a.summary()["ops"])
        seen_merges |= set(a.summary()["merges"])
    assert seen_stages == {1, 2, 3, 4} and len(seen_sizes) >= 6
    assert seen_kinds == {"hnag", "rnag"}
    assert seen_ops >= {"conv3x3", "conv5x5", "conv1x1", "conv3x1", "conv1x3", "avgpool3x3", "avgpool5x5",
                        "sep3x3", "sep5x5", "sep1x3"}
    assert seen_merges == {"sum", "concat", "attention"}


@pytest.mark.parametrize("size, channels, classes", [
    ((8, 8), 1, 10), ((28, 28), 1, 10), ((32, 32), 3, 100), ((64, 64), 3, 7), ((7, 7), 1, 2),
    ((13, 13), 3, 3), ((1, 1), 2, 5), ((3, 50), 4, 1),
])
def test_output_shape_and_counts(size, channels, classes) -> None:
    a = sample_architecture(hnag(head_width=32), 1, in_channels=channels, image_size=size, num_classes=classes)
    net = build_network(a, 0)
    out = net(torch.randn(3, channels, *size))
    assert out.shape == (3, classes) and torch.isfinite(out).all()
    out.sum().backward()
    assert a.param_count() == sum(p.numel() for p in net.parameters())


def test_single_mid_node_and_1280_head() -> None:
    a = sample_architecture(hnag(nm=1), 0, in_channels=3, image_size=(32, 32), num_classes=10)
    net = build_network(a, 0)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert net.head.fc.in_features == 1280
    assert a.param_count() == sum(p.numel() for p in net.parameters())


def test_same_seed_same_weights_and_no_global_rng() -> None:
    a = sample_architecture(hnag(), 4, in_channels=3, image_size=(16, 16), num_classes=10)
    state = torch.random.get_rng_state()
    s1, s2 = build_network(a, 11).state_dict(), build_network(a, 11).state_dict()
    assert torch.equal(state, torch.random.get_rng_state())
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    s3 = build_network(a, 12).state_dict()
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)
    conv_biases = [m.bias for m in build_network(a, 11).modules() if isinstance(m, nn.Conv2d)]
    assert all(torch.count_nonzero(b) == 0 for b in conv_biases)


def test_gates_start_at_sigmoid_one() -> None:
    a = sample_architecture(hnag(nt=8, kt=4, nm=4, pm=0.9, nb=5, kb=4), 0, in_channels=3, image_size=(8, 8),
                            num_classes=10)
    net = build_network(a, 0)
    gates = [torch.sigmoid(m.gate_logits) for m in net.modules() if isinstance(m, Graph) and m.gate_logits is not None]
    assert gates and all(torch.allclose(g, torch.full_like(g, 1 / (1 + math.exp(-1)))) for g in gates)


def test_merges_by_hand() -> None:
    """A 3-cell top graph (triangle) in 3 stages: cell 2 gets cell 1 gated and cell 0 projected+pooled twice."""
    a = sample_architecture(hnag(nt=3, kt=2, nm=1, nb=1, kb=2), 0, in_channels=1, image_size=(8, 8), num_classes=2)
    assert [e.kind for e in a.top_merge(2).edges] == ["proj", "gate"]
    assert [e.steps for e in a.top_merge(2).edges] == [2, 1]
    net = build_network(a, 0).eval()
    body, cells = net.body, net.body.nodes
    x = torch.randn(2, a.stage_channels[0], 8, 8)
    pool = lambda t: torch.nn.functional.avg_pool2d(t, 2, 2, ceil_mode=True)
    with torch.no_grad():
        y0 = cells[0](x)
        y1 = cells[1](pool(y0))
        g = torch.sigmoid(body.gate_logits)
        y2 = cells[2](body.projections[0](pool(pool(y0))) + g[0] * pool(y1))
        assert torch.allclose(body(x), y2, atol=1e-6)


def test_inplace_relu_changes_nothing() -> None:
    a = sample_architecture(hnag(nt=6, nm=4, pm=0.9, nb=5, kb=4, head_width=0), 2, in_channels=3, image_size=(8, 8), num_classes=4)
    net = build_network(a, 0)
    x = torch.randn(4, 3, 8, 8)
    x0 = x.clone()
    ops = [m for m in net.modules() if isinstance(m, ConvOp)]
    assert any(m.inplace_relu for m in ops)
    y = net(x)
    y.square().sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    assert torch.equal(x, x0)
    for m in ops:
        m.inplace_relu = False
    net.zero_grad()
    y2 = net(x)
    y2.square().sum().backward()
    assert torch.equal(y, y2)
    assert all(torch.allclose(g, p.grad) for g, p in zip(grads, net.parameters()))


def test_normalize() -> None:
    norm = Normalize([0.5, 0.25], [0.5, 0.125])
    x = torch.tensor([0.0, 255.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    assert torch.allclose(norm(x)[0, :, 0, 0], torch.tensor([-1.0, 6.0]))
    assert {k for k, _ in norm.named_buffers()} == {"mean", "std"}


def test_onnx_round_trip(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    a = sample_architecture(hnag(nt=4, kt=2, nm=2, pm=0.9, nb=3, kb=2, budget=3000, head_width=16), 1,
                            in_channels=3, image_size=(13, 11), num_classes=5)
    model = nn.Sequential(Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]), build_network(a, 3))
    model(torch.rand(8, 3, 13, 11) * 255)  # train-mode pass: non-trivial BN running stats
    model.eval()
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.rand(2, 3, 13, 11) * 255,), str(path), dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        x = torch.rand(n, 3, 13, 11) * 255
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


# --- RNAG (RandWire) ------------------------------------------------------------------------------------


def rnag(nodes=6, k=4, p=0.75, budget=4_000, **kw) -> RnagConfig:
    return RnagConfig(LevelConfig("ws", {"nodes": nodes, "k": k, "p": p}), param_budget=budget, **kw)


@pytest.mark.parametrize("size, channels, classes", [((8, 8), 1, 10), ((32, 32), 3, 100), ((64, 64), 3, 7),
                                                     ((1, 1), 2, 5), ((5, 9), 1, 3)])
def test_rnag_output_shape_and_counts(size, channels, classes) -> None:
    a = sample_architecture(rnag(head_width=32), 1, in_channels=channels, image_size=size, num_classes=classes)
    net = build_network(a, 0)
    out = net(torch.randn(3, channels, *size))
    assert out.shape == (3, classes) and torch.isfinite(out).all()
    out.sum().backward()
    assert a.param_count() == sum(p.numel() for p in net.parameters())
    assert a.mac_count() == hooked_macs(net.eval(), torch.randn(1, channels, *size))


def test_rnag_nodes_are_relu_separable_conv_bn() -> None:
    a = sample_architecture(rnag(), 0, in_channels=1, image_size=(8, 8), num_classes=10)
    net = build_network(a, 0)
    ops = [m for m in net.modules() if isinstance(m, ConvOp)]
    assert len(ops) == sum(c.dag.n for c in a.cells)
    for op in ops:
        assert op.conv.depthwise.groups == op.conv.depthwise.in_channels and op.conv.depthwise.kernel_size == (3, 3)
        assert op.conv.pointwise.kernel_size == (1, 1)
    assert {op.conv.depthwise.in_channels for op in ops} == set(a.stage_channels)


def test_rnag_onnx_round_trip(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    a = sample_architecture(rnag(nodes=5, budget=2000, head_width=16), 2, in_channels=3, image_size=(13, 11),
                            num_classes=5)
    model = nn.Sequential(Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]), build_network(a, 3))
    model(torch.rand(8, 3, 13, 11) * 255)
    model.eval()
    path = tmp_path / "r.onnx"
    torch.onnx.export(model, (torch.rand(2, 3, 13, 11) * 255,), str(path), dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 3, 13, 11) * 255
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4, rtol=0)


# --- extended knobs: operations, merges, conv type (NAGO.md §1.3, AugV1) ---------------------------------


def extended(merge: str, **kw) -> HnagConfig:
    """A triangle of 3 cells (one per stage), one single-op op-graph each, every level merging with ``merge``."""
    levels = [LevelConfig("ws", {"nodes": 3, "k": 2, "p": 0.5}, {merge: 1.0}),
              LevelConfig("er", {"nodes": 1, "p": 0.5}, {merge: 1.0}),
              LevelConfig("ws", {"nodes": 1, "k": 2, "p": 0.5}, {merge: 1.0})]
    return HnagConfig(*levels, param_budget=kw.pop("budget", 3000), **kw)


def test_concat_merge_by_hand() -> None:
    a = sample_architecture(extended("concat"), 0, in_channels=1, image_size=(8, 8), num_classes=2)
    c = a.stage_channels
    assert a.top.preds[2] == (0, 1) and a.cells[2].in_channels == c[0] + c[1]
    net = build_network(a, 0).eval()
    cells = net.body.nodes
    x = torch.randn(2, c[0], 8, 8)
    pool = lambda t: torch.nn.functional.avg_pool2d(t, 2, 2, ceil_mode=True)
    with torch.no_grad():
        y0 = cells[0](x)
        y1 = cells[1](pool(y0))
        y2 = cells[2](torch.cat([pool(pool(y0)), pool(y1)], 1))
        assert torch.allclose(net.body(x), y2, atol=1e-6)
    assert net.body.gate_logits is None and len(net.body.projections) == 0  # concat has neither


def test_attention_merge_by_hand() -> None:
    a = sample_architecture(extended("attention"), 0, in_channels=1, image_size=(8, 8), num_classes=2)
    assert [e.kind for e in a.top_merge(2).edges] == ["proj", "pass"]  # to the last input's width
    net = build_network(a, 0).eval()
    body, cells = net.body, net.body.nodes
    x = torch.randn(2, a.stage_channels[0], 8, 8)
    pool = lambda t: torch.nn.functional.avg_pool2d(t, 2, 2, ceil_mode=True)
    with torch.no_grad():
        body.gate_logits.fill_(-0.3)
        y0 = cells[0](x)
        y1 = cells[1](pool(y0))
        first = body.projections[0](pool(pool(y0)))
        lo = first.amin((1, 2, 3), keepdim=True)
        hi = first.amax((1, 2, 3), keepdim=True)
        mask = (first - lo) / (hi - lo)
        s = pool(y1)
        y2 = cells[2](torch.sigmoid(torch.tensor(-0.3)) * s + s * mask)
        assert torch.allclose(body(x), y2, atol=1e-5)


@pytest.mark.parametrize("size, channels", [((8, 8), 1), ((28, 28), 1), ((32, 32), 3)])
def test_forward_backward_and_every_gate_gets_a_gradient(size, channels) -> None:
    merge = {"sum": 1.0, "concat": 1.0, "attention": 1.0}
    levels = [LevelConfig("ws", {"nodes": 6, "k": 4, "p": 0.5}, merge), LevelConfig("er", {"nodes": 4, "p": 0.7}, merge),
              LevelConfig("ws", {"nodes": 5, "k": 4, "p": 0.5}, merge)]
    cfg = HnagConfig(*levels, param_budget=6000, head_width=16, ops={n: 1.0 for n in OP_NAMES})
    a = sample_architecture(cfg, 3, in_channels=channels, image_size=size, num_classes=10)
    assert set(a.summary()["merges"]) == {"sum", "concat", "attention"}
    net = build_network(a, 0)
    net(torch.randn(4, channels, *size)).logsumexp(1).sum().backward()
    graphs = [m for m in net.modules() if isinstance(m, Graph) and m.gate_logits is not None]
    assert graphs
    for g in graphs:
        assert g.gate_logits.grad is not None and bool((g.gate_logits.grad != 0).all())
    assert all(p.grad is not None for p in net.parameters())


def test_pool_ops_project_only_when_the_width_changes() -> None:
    cfg = hnag(nt=4, kt=2, nm=2, pm=0.9, nb=3, kb=2, ops={"avgpool3x3": 1.0, "avgpool5x5": 1.0, "conv1x1": 1.0})
    seen = set()
    for seed in range(10):
        a = sample_architecture(cfg, seed, in_channels=1, image_size=(8, 8), num_classes=2)
        net = build_network(a, 0)
        for i, (c, cell) in enumerate(zip(a.cells, net.body.nodes)):
            for (_, bms), g, gmod in zip(a.cell_merges(i), c.op_graphs, cell.nodes):
                assert all(op.kind == "conv" for b, op in enumerate(g.ops) if b in g.dag.outputs)
                for op, bm, mod in zip(g.ops, bms, gmod.nodes):
                    if op.kind == "pool":
                        assert (mod.proj is None) == (bm.channels == c.channels)
                        assert mod.pool.kernel_size == op.kernel and not mod.pool.count_include_pad
                        seen.add(mod.proj is None)
        assert a.param_count() == sum(p.numel() for p in net.parameters())
    assert seen == {True, False}


@pytest.mark.parametrize("conv_type, merge", [("normal", "concat"), ("separable", "attention")])
def test_extended_onnx_round_trip(tmp_path, conv_type, merge) -> None:
    ort = pytest.importorskip("onnxruntime")
    mix = {"sum": 1.0, merge: 2.0}
    levels = [LevelConfig("ws", {"nodes": 5, "k": 4, "p": 0.5}, mix), LevelConfig("er", {"nodes": 3, "p": 0.8}, mix),
              LevelConfig("ws", {"nodes": 4, "k": 2, "p": 0.5}, mix)]
    cfg = HnagConfig(*levels, param_budget=3000, head_width=16, ops={n: 1.0 for n in OP_NAMES}, conv_type=conv_type)
    a = sample_architecture(cfg, 5, in_channels=3, image_size=(13, 11), num_classes=5)
    model = nn.Sequential(Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]), build_network(a, 3))
    model(torch.rand(8, 3, 13, 11) * 255)
    model.eval()
    path = tmp_path / "x.onnx"
    torch.onnx.export(model, (torch.rand(2, 3, 13, 11) * 255,), str(path), dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(4, 3, 13, 11) * 255
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4, rtol=0)
