"""Torch realisation of an Architecture: one Graph module shape used recursively for op-graphs, cells and the top."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nago_spec.generator import (
    Architecture,
    Merge,
    NodeOp,
    OpGraph,
    outputs_merge,
    stem_half,
)
from nago_spec.graphs import Dag


def _pool(x: Tensor) -> Tensor:
    """One resolution halving, ceil(r / 2) per side: ``[N, C, H, W] -> [N, C, ceil(H/2), ceil(W/2)]``."""
    return F.avg_pool2d(x, 2, 2, ceil_mode=True)


class ConvOp(nn.Module):
    """A conv node: ReLU -> Conv(kh x kw, same padding, bias) -> BN, ``[N, Cin, H, W] -> [N, Cout, H, W]``.

    A separable op's conv is SeparableConv (depthwise kh x kw then pointwise 1x1, RandWire's node).
    ``inplace_relu`` is set only where the input is a fresh merge result that nothing else reads.
    """

    def __init__(self, op: NodeOp, cin: int, cout: int, inplace_relu: bool = False):
        super().__init__()
        if op.separable:
            self.conv: nn.Module = SeparableConv(cin, cout, 1, op.kernel)
        else:
            self.conv = nn.Conv2d(cin, cout, op.kernel, padding=op.padding, bias=True)
        self.bn = nn.BatchNorm2d(cout)
        self.inplace_relu = inplace_relu

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(F.relu(x, inplace=self.inplace_relu)))


class PoolOp(nn.Module):
    """A pooling node: [1x1 conv when Cin != Cout] -> AvgPool(k x k, stride 1, same padding, padding not
    counted), ``[N, Cin, H, W] -> [N, Cout, H, W]`` (NAGO.md §1.5)."""

    def __init__(self, op: NodeOp, cin: int, cout: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 1, bias=True) if cin != cout else None
        self.pool = nn.AvgPool2d(op.kernel, 1, op.padding, count_include_pad=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(x if self.proj is None else self.proj(x))


def make_op(op: NodeOp, cin: int, cout: int, inplace_relu: bool = False) -> nn.Module:
    """The module of a bottom-level node: ``[N, cin, H, W] -> [N, cout, H, W]``."""
    if op.kind == "pool":
        return PoolOp(op, cin, cout)
    return ConvOp(op, cin, cout, inplace_relu)


_PASS, _SUM, _CONCAT, _ATTENTION, _MEAN = range(5)
_MODES = {"pass": _PASS, "sum": _SUM, "concat": _CONCAT, "attention": _ATTENTION, "mean": _MEAN}


def _minmax_mask(x: Tensor) -> Tensor:
    """``x`` rescaled to [0, 1] per sample: ``(x - min) / (max - min)`` over C, H, W."""
    flat = x.flatten(1)
    lo = flat.amin(1).view(-1, 1, 1, 1)
    hi = flat.amax(1).view(-1, 1, 1, 1)
    return (x - lo) / (hi - lo).clamp_min(1e-6)


def _total(ts: Sequence[Tensor]) -> Tensor:
    h = ts[0]
    for t in ts[1:]:
        h = h + t
    return h


class Graph(nn.Module):
    """A DAG of node modules (Ops or Graphs): merge each node's inputs, run it, merge the outputs.

    ``merges[i]`` is node i's Merge (source -1 = the graph input; each input pooled ``steps`` times,
    then passed, gated or 1x1-projected and combined by the merge's kind); ``out_merge`` combines
    the outputs. The pooling plan and the gate and projection indices are fixed here, so forward
    does no planning.
    """

    def __init__(self, nodes: Sequence[nn.Module], merges: Sequence[Merge], out_merge: Merge):
        super().__init__()
        self.nodes = nn.ModuleList(nodes)
        projections: list[nn.Module] = []
        n_gates = 0

        def gate() -> int:
            nonlocal n_gates
            n_gates += 1
            return n_gates - 1

        def plan(mg: Merge) -> tuple[int, int, tuple[tuple[int, int, int, int], ...]]:
            edges = []
            for e in mg.edges:
                g = p = -1
                if e.kind == "gate":
                    g = gate()
                elif e.kind == "proj":
                    p = len(projections)
                    projections.append(nn.Conv2d(e.channels, mg.channels, 1, bias=True))
                edges.append((e.src + 1, e.steps, g, p))  # source 0 is the graph input, node j is j + 1
            return _MODES[mg.kind], gate() if mg.kind == "attention" else -1, tuple(edges)

        self._in_plan = tuple(plan(mg) for mg in merges)
        self._out_plan = plan(out_merge)
        self.projections = nn.ModuleList(projections)
        self.gate_logits = nn.Parameter(torch.ones(n_gates)) if n_gates else None
        depth = [0] * (len(nodes) + 1)  # pooling steps each source must provide
        for src, steps, _, _ in (e for _, _, es in (*self._in_plan, self._out_plan) for e in es):
            depth[src] = max(depth[src], steps)
        self._depth = tuple(depth)
        self._inv_outputs = 1.0 / len(out_merge.edges)

    def _pyramid(self, x: Tensor, depth: int) -> list[Tensor]:
        xs = [x]
        for _ in range(depth):
            xs.append(_pool(xs[-1]))
        return xs

    def _merge(self, mode: int, node_gate: int, edges: tuple[tuple[int, int, int, int], ...],
               srcs: list[list[Tensor]], gates: Sequence[Tensor]) -> Tensor:
        if mode == _PASS:
            src, steps, _, _ = edges[0]
            return srcs[src][steps]
        projections = self.projections
        if mode == _SUM:
            h = None
            for src, steps, gate, proj in edges:
                t = srcs[src][steps]
                if proj >= 0:
                    t = projections[proj](t)
                    h = t if h is None else h + t
                elif h is None:
                    h = t * gates[gate]
                else:
                    h = torch.addcmul(h, t, gates[gate])
            return h
        if mode == _CONCAT:
            return torch.cat([srcs[src][steps] for src, steps, _, _ in edges], 1)
        ts = [srcs[src][steps] if proj < 0 else projections[proj](srcs[src][steps]) for src, steps, _, proj in edges]
        if mode == _MEAN:
            return ts[0] if len(ts) == 1 else _total(ts) * self._inv_outputs
        # attention: sigmoid(w)·s + s·mask, s the sum of all inputs but the first, which gives the mask
        return _total(ts[1:]) * (_minmax_mask(ts[0]) + gates[node_gate])

    def forward(self, x: Tensor) -> Tensor:
        """``[N, C_in, H, W] -> [N, C_out, H', W']`` (H' < H only at the top level)."""
        gates = torch.sigmoid(self.gate_logits).unbind(0) if self.gate_logits is not None else ()
        srcs = [self._pyramid(x, self._depth[0])]
        for node, (mode, node_gate, edges), depth in zip(self.nodes, self._in_plan, self._depth[1:]):
            srcs.append(self._pyramid(node(self._merge(mode, node_gate, edges, srcs, gates)), depth))
        mode, node_gate, edges = self._out_plan
        return self._merge(mode, node_gate, edges, srcs, gates)


def _inner_graph(dag: Dag, merges: Sequence[Merge], make_node: Callable[[int, Merge], nn.Module],
                 channels: int) -> Graph:
    """A mid or bottom graph: every node outputs ``channels``; outputs are averaged unpooled."""
    return Graph([make_node(i, mg) for i, mg in enumerate(merges)], merges, outputs_merge(dag, channels))


def _op_graph(g: OpGraph, merges: Sequence[Merge], cout: int) -> Graph:
    """``[N, cin, H, W] -> [N, cout, H, W]`` with cin the op-graph's input width."""
    def make(b: int, mg: Merge) -> nn.Module:
        return make_op(g.ops[b], mg.channels, cout, inplace_relu=mg.kind != "pass")
    return _inner_graph(g.dag, merges, make, cout)


def _cell(arch: Architecture, i: int) -> Graph:
    """``[N, cell.in_channels, h, w] -> [N, cell.channels, h, w]`` at the cell's resolution."""
    cell = arch.cells[i]
    plan = list(arch.cell_merges(i))

    def make(m: int, mg: Merge) -> nn.Module:
        return _op_graph(cell.op_graphs[m], plan[m][1], cell.channels)
    return _inner_graph(cell.dag, [mm for mm, _ in plan], make, cell.channels)


def _top(arch: Architecture) -> Graph:
    """``[N, C1, *stem_resolution] -> [N, out_channels, *stage_resolutions[out_stage]]``."""
    cells = [_cell(arch, i) for i in range(len(arch.cells))]
    return Graph(cells, [arch.top_merge(i) for i in range(len(arch.cells))], arch.top_out_merge())


class SeparableConv(nn.Module):
    """Depthwise k x k (stride s) then pointwise 1x1, both with bias: ``[N, cin, H, W] -> [N, cout, H/s, W/s]``."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: tuple[int, int] = (3, 3)):
        super().__init__()
        padding = (kernel[0] // 2, kernel[1] // 2)
        self.depthwise = nn.Conv2d(cin, cin, kernel, stride, padding, groups=cin, bias=True)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


def _stem(arch: Architecture) -> nn.Module:
    """``[N, in_channels, H, W] -> [N, C1, *stem_resolution]`` (NAGO.md §1.5)."""
    cin, c1 = arch.in_channels, arch.stem_channels
    if arch.stem == "small":
        return nn.Sequential(nn.Conv2d(cin, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(inplace=True),
                             nn.Conv2d(c1, c1, 3, padding=1), nn.BatchNorm2d(c1))
    h = stem_half(c1)
    return nn.Sequential(SeparableConv(cin, h, 2), nn.BatchNorm2d(h), nn.ReLU(inplace=True),
                         SeparableConv(h, c1, 2), nn.BatchNorm2d(c1))


class Head(nn.Module):
    """``[N, C, h, w] -> [N, classes]``: ReLU -> [Conv1x1 -> BN -> ReLU] -> global avg pool -> [Dropout] -> Linear."""

    def __init__(self, cin: int, width: int, classes: int, dropout: float):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(cin, width, 1), nn.BatchNorm2d(width)) if width else None
        self.dropout = nn.Dropout(dropout) if width else None
        self.fc = nn.Linear(width or cin, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        if self.expand is not None:
            x = F.relu(self.expand(x), inplace=True)
        x = x.mean((2, 3))
        if self.dropout is not None:
            x = self.dropout(x)
        return self.fc(x)


class Network(nn.Module):
    """stem -> top graph of cells -> head: ``[N, C, H, W]`` (normalised) -> logits ``[N, classes]``."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.stem = _stem(arch)
        self.body = _top(arch)
        self.head = Head(arch.out_channels, arch.head_width, arch.num_classes, arch.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(self.stem(x)))


class Normalize(nn.Module):
    """Raw pixels in [0, 255] to normalised input: ``(x / 255 - mean) / std`` per channel, ``[N, C, H, W]``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x / 255.0 - self.mean) / self.std


@torch.no_grad()
def init_weights(model: nn.Module, seed: int) -> None:
    """Initialise every parameter and buffer from ``torch.Generator().manual_seed(seed)`` (no global RNG)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=gen)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.weight.fill_(1.0)
            m.bias.zero_()
        elif isinstance(m, nn.Linear):
            bound = m.in_features ** -0.5  # torch's default Linear init, drawn from gen
            m.weight.uniform_(-bound, bound, generator=gen)
            m.bias.uniform_(-bound, bound, generator=gen)
        elif isinstance(m, Graph):
            if m.gate_logits is not None:
                m.gate_logits.fill_(1.0)
        elif next(m.parameters(recurse=False), None) is not None or next(m.buffers(recurse=False), None) is not None:
            raise AssertionError(f"init_weights does not know {type(m).__name__}")


def build_network(arch: Architecture, seed: int) -> nn.Module:
    """The torch module of ``arch`` with weights from ``seed``: ``[N, C, H, W]`` float32 -> ``[N, classes]``.

    Modules are created on the meta device (so construction draws nothing from the global RNG) and
    every tensor is then filled by init_weights; the same (arch, seed) gives bit-identical weights.
    """
    with torch.device("meta"):
        model = Network(arch)
    model = model.to_empty(device="cpu")
    init_weights(model, seed)
    return model
