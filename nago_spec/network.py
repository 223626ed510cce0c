"""Torch realisation of an Architecture: one Graph module shape used recursively for op-graphs, cells and the top."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nago_spec.generator import Architecture, Cell, Edge, NodeOp, OpGraph, inner_edges, stem_half
from nago_spec.graphs import Dag


def _pool(x: Tensor) -> Tensor:
    """One resolution halving, ceil(r / 2) per side: ``[N, C, H, W] -> [N, C, ceil(H/2), ceil(W/2)]``."""
    return F.avg_pool2d(x, 2, 2, ceil_mode=True)


class Op(nn.Module):
    """A bottom-level node: ReLU -> Conv(k x k, same padding, bias) -> BN, ``[N, Cin, H, W] -> [N, Cout, H, W]``.

    A separable op's conv is SeparableConv (depthwise k x k then pointwise 1x1, RandWire's node).
    ``inplace_relu`` is set only where the input is a fresh merge sum that nothing else reads.
    """

    def __init__(self, op: NodeOp, cin: int, cout: int, inplace_relu: bool = False):
        super().__init__()
        if op.separable:
            self.conv: nn.Module = SeparableConv(cin, cout, 1, op.kernel)
        else:
            self.conv = nn.Conv2d(cin, cout, op.kernel, padding=op.kernel // 2, bias=True)
        self.bn = nn.BatchNorm2d(cout)
        self.inplace_relu = inplace_relu

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(F.relu(x, inplace=self.inplace_relu)))


class Graph(nn.Module):
    """A DAG of node modules (Ops or Graphs): merge each node's inputs, run it, average the outputs.

    ``in_edges[i]`` lists node i's inputs (source -1 = the graph input), each pooled ``steps`` times
    and then passed, gated (sigmoid(w)·x, w init 1) or 1x1-projected before summing; ``out_edges``
    are the outputs, pooled and projected the same way, then averaged. The pooling plan, gate and
    projection indices are all fixed here, so forward does no planning.
    """

    def __init__(self, nodes: Sequence[nn.Module], in_edges: Sequence[Sequence[Edge]],
                 in_planes: Sequence[int], out_edges: Sequence[Edge], out_planes: int):
        super().__init__()
        self.nodes = nn.ModuleList(nodes)
        projections: list[nn.Module] = []
        n_gates = 0

        def plan(e: Edge, planes: int) -> tuple[int, int, int, int]:
            nonlocal n_gates
            gate = proj = -1
            if e.kind == "gate":
                gate, n_gates = n_gates, n_gates + 1
            elif e.kind == "proj":
                proj = len(projections)
                projections.append(nn.Conv2d(e.channels, planes, 1, bias=True))
            return e.src + 1, e.steps, gate, proj  # source 0 is the graph input, node j is j + 1

        self._in_plan = tuple(tuple(plan(e, p) for e in es) for es, p in zip(in_edges, in_planes))
        self._out_plan = tuple(plan(e, out_planes) for e in out_edges)
        self.projections = nn.ModuleList(projections)
        self.gate_logits = nn.Parameter(torch.ones(n_gates)) if n_gates else None
        depth = [0] * (len(nodes) + 1)  # pooling steps each source must provide
        for src, steps, _, _ in (e for es in (*self._in_plan, self._out_plan) for e in es):
            depth[src] = max(depth[src], steps)
        self._depth = tuple(depth)
        self._inv_outputs = 1.0 / len(out_edges)

    def _pyramid(self, x: Tensor, depth: int) -> list[Tensor]:
        xs = [x]
        for _ in range(depth):
            xs.append(_pool(xs[-1]))
        return xs

    def forward(self, x: Tensor) -> Tensor:
        """``[N, C_in, H, W] -> [N, C_out, H', W']`` (H' < H only at the top level)."""
        gates = torch.sigmoid(self.gate_logits).unbind(0) if self.gate_logits is not None else ()
        projections = self.projections
        srcs = [self._pyramid(x, self._depth[0])]
        for node, edges, depth in zip(self.nodes, self._in_plan, self._depth[1:]):
            if len(edges) == 1:
                src, steps, _, _ = edges[0]
                h = srcs[src][steps]
            else:
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
            srcs.append(self._pyramid(node(h), depth))
        out = None
        for src, steps, _, proj in self._out_plan:
            t = srcs[src][steps]
            if proj >= 0:
                t = projections[proj](t)
            out = t if out is None else out + t
        if len(self._out_plan) > 1:
            out = out * self._inv_outputs
        return out


def _inner_graph(dag: Dag, make_node: Callable[[int], nn.Module], channels: int) -> Graph:
    """A mid or bottom graph: every node outputs ``channels``; outputs are averaged unpooled."""
    in_edges = [inner_edges(dag, i, channels) for i in range(dag.n)]
    nodes = [make_node(i) for i in range(dag.n)]
    out_edges = [Edge(j, 0, "pass", channels) for j in dag.outputs]
    return Graph(nodes, in_edges, [channels] * dag.n, out_edges, channels)


def _op_graph(g: OpGraph, cin: int, cout: int) -> Graph:
    """``[N, cin, H, W] -> [N, cout, H, W]``."""
    def make(b: int) -> nn.Module:
        preds = g.dag.preds[b]
        return Op(g.ops[b], cout if preds else cin, cout, inplace_relu=len(preds) > 1)
    return _inner_graph(g.dag, make, cout)


def _cell(cell: Cell) -> Graph:
    """``[N, cell.in_channels, h, w] -> [N, cell.channels, h, w]`` at the cell's resolution."""
    def make(m: int) -> nn.Module:
        cin = cell.channels if cell.dag.preds[m] else cell.in_channels
        return _op_graph(cell.op_graphs[m], cin, cell.channels)
    return _inner_graph(cell.dag, make, cell.channels)


def _top(arch: Architecture) -> Graph:
    """``[N, C1, *stem_resolution] -> [N, out_channels, *stage_resolutions[out_stage]]``."""
    cells = [_cell(c) for c in arch.cells]
    in_edges = [arch.top_in_edges(i) for i in range(len(arch.cells))]
    return Graph(cells, in_edges, [c.in_channels for c in arch.cells], arch.top_out_edges(), arch.out_channels)


class SeparableConv(nn.Module):
    """Depthwise k x k (stride s) then pointwise 1x1, both with bias: ``[N, cin, H, W] -> [N, cout, H/s, W/s]``."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int = 3):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, kernel, stride, kernel // 2, groups=cin, bias=True)
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
