"""The three-level NAGO generator (NAGO.md §1) and the RandWire baseline (RNAG, §4.2): random graphs resolved into an Architecture."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from nago_spec.errors import RegistryError, SpecError
from nago_spec.graphs import GRAPH_MODELS, Dag, orient, sample_graph

#: Images whose smaller side is below this use the stride-1 stem; larger ones the /4 stem (NAGO.md §1.5).
SMALL_IMAGE_LIMIT = 40

#: Dropout before the classifier when the head has a 1x1 expansion (NAGO.md §1.5).
HEAD_DROPOUT = 0.2

#: The bottom-level node operations of NAGO.md §1.3 (θ_op): conv name -> kernel (kh, kw), pool name -> k.
CONV_OPS = {"conv3x3": (3, 3), "conv5x5": (5, 5), "conv1x1": (1, 1), "conv3x1": (3, 1), "conv1x3": (1, 3)}
POOL_OPS = {"avgpool3x3": 3, "avgpool5x5": 5}
OP_NAMES = (*CONV_OPS, *POOL_OPS)
CONV_OP_NAMES = tuple(CONV_OPS)
#: How a node with several inputs merges them (NAGO.md §1.5, θ_M).
MERGE_NAMES = ("sum", "concat", "attention")
#: How every conv op is built: a plain conv, or depthwise k x k then pointwise 1x1.
CONV_TYPES = ("normal", "separable")


# --------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class LevelConfig:
    """One level of the hierarchy: a graph model and its fixed parameter values.

    e.g. ``LevelConfig("ws", {"nodes": 6, "k": 4, "p": 0.5})``.
    """

    graph: str
    params: Mapping[str, int | float]
    merge: Mapping[str, float] = field(default_factory=lambda: {"sum": 1.0})

    def problems(self, where: str) -> list[str]:
        """Every problem with this level, one line each (empty when valid)."""
        out = _distribution_problems(f"{where}.merge", self.merge, MERGE_NAMES, "merge")
        try:
            model = GRAPH_MODELS.get(self.graph)
        except RegistryError as e:
            return [*out, f"{where}.graph = {self.graph!r}: {e}"]
        for name in sorted(set(self.params) - set(model.param_names)):
            out.append(f"{where}.{name}: unknown parameter of graph model '{model.name}' "
                       f"(valid: {', '.join(model.param_names)})")
        for p in model.params:
            if p.name not in self.params:
                out.append(f"{where}.{p.name}: missing ({p.doc})")
                continue
            v = self.params[p.name]
            if (isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v)
                    or (p.kind is int and v != int(v))):
                out.append(f"{where}.{p.name} = {v!r}: must be {p.kind.__name__}")
            elif v < p.low or (p.high is not None and v > p.high):
                hi = "inf" if p.high is None else p.high
                out.append(f"{where}.{p.name} = {v!r}: `{p.low} <= {p.name} <= {hi}` must hold")
        return out


@dataclass(frozen=True)
class HnagConfig:
    """Everything that fixes a generator (NAGO.md §1.3): Θ = [θ_top, θ_mid, θ_bottom, θ_S, θ_C, θ_M, θ_op].

    The three levels carry their graph parameters and merge distribution θ_M; ``ops`` is θ_op, the
    relative weights of the bottom-level operations (OP_NAMES), and ``conv_type`` how every conv op
    is built. ``head_width = 0`` pools the last features straight into the Linear classifier;
    ``share_graphs`` reproduces upstream vega (one mid graph shared by all cells, one bottom graph
    by all op-graphs, and so one draw of their merges and operations).
    """

    top: LevelConfig
    mid: LevelConfig
    bottom: LevelConfig
    param_budget: int
    stage_ratios: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3)
    channel_ratios: tuple[float, ...] = (1.0, 2.0, 4.0)
    head_width: int = 1280
    share_graphs: bool = False
    ops: Mapping[str, float] = field(default_factory=lambda: {"conv3x3": 1.0})
    conv_type: str = "normal"

    def __post_init__(self) -> None:
        problems = _distribution_problems("ops", self.ops, OP_NAMES, "operation")
        if self.conv_type not in CONV_TYPES:
            problems.append(f"conv_type = {self.conv_type!r}: must be one of {', '.join(CONV_TYPES)}")
        for name in ("top", "mid", "bottom"):
            problems += getattr(self, name).problems(name)
        sr, cr = self.stage_ratios, self.channel_ratios
        if not sr:
            problems.append("stage_ratios = (): at least one stage is needed")
        if any(r <= 0 for r in sr) or abs(sum(sr) - 1.0) > 1e-6:
            problems.append(f"stage_ratios = {sr}: must be positive and sum to 1 (got sum {sum(sr):.6g})")
        if len(cr) != len(sr):
            problems.append(f"channel_ratios = {cr}: needs one ratio per stage ({len(sr)}), got {len(cr)}")
        _raise_problems(problems + _width_problems(self.param_budget, cr, self.head_width))

    @property
    def num_stages(self) -> int:
        return len(self.stage_ratios)


def _distribution_problems(where: str, dist: Mapping[str, float], names: Sequence[str], what: str) -> list[str]:
    """Problems of a categorical distribution given as relative weights (all zero: uniform over its names)."""
    out = [f"{where}: unknown {what} {k!r} (valid: {', '.join(names)})" for k in dist if k not in names]
    if not dist:
        out.append(f"{where} = {{}}: needs at least one {what}")
    out += [f"{where}.{k} = {v!r}: must be a finite weight >= 0" for k, v in dist.items()
            if not (math.isfinite(v) and v >= 0)]
    return out


def _width_problems(param_budget: int, channel_ratios: tuple[float, ...], head_width: int) -> list[str]:
    """What both generators require of the budget, the channel ratios and the head."""
    problems = []
    if not param_budget > 0:
        problems.append(f"param_budget = {param_budget!r}: `param_budget > 0` must hold")
    if any(r <= 0 for r in channel_ratios):
        problems.append(f"channel_ratios = {channel_ratios}: must be positive")
    if head_width < 0:
        problems.append(f"head_width = {head_width!r}: `head_width >= 0` must hold")
    return problems


def _raise_problems(problems: list[str]) -> None:
    if problems:
        raise SpecError(problems)


@dataclass(frozen=True)
class RnagConfig:
    """The RandWire generator (Xie et al. 2019; NAGO.md §4.2 RNAG): one random graph per stage.

    There are ``len(channel_ratios)`` stages; each draws its own graph from ``stage`` and every node
    is ReLU -> separable 3x3 conv -> BN (NAGO.md §1.5, [RW]).
    """

    stage: LevelConfig
    param_budget: int
    channel_ratios: tuple[float, ...] = (1.0, 2.0, 4.0)
    head_width: int = 1280

    def __post_init__(self) -> None:
        problems = self.stage.problems("stage")
        if not self.channel_ratios:
            problems.append("channel_ratios = (): at least one stage is needed")
        _raise_problems(problems + _width_problems(self.param_budget, self.channel_ratios, self.head_width))

    @property
    def num_stages(self) -> int:
        return len(self.channel_ratios)


# --------------------------------------------------------------------------------------- description


@dataclass(frozen=True)
class NodeOp:
    """A bottom-level node operation (NAGO.md §1.3, §1.5).

    ``kind = "conv"``: ReLU -> Conv(kh x kw, stride 1, same padding, bias) -> BN; a ``separable``
    conv is depthwise kh x kw (groups = Cin, bias) then pointwise 1x1 (bias), RandWire's node.
    ``kind = "pool"``: [1x1 conv with bias, only when Cin != Cout] -> AvgPool(k x k, stride 1, same
    padding, padded cells not counted); no ReLU or BN, as in the official code.
    """

    kind: str = "conv"
    kernel: tuple[int, int] = (3, 3)
    separable: bool = False

    @property
    def name(self) -> str:
        kh, kw = self.kernel
        if self.kind == "pool":
            return f"avgpool{kh}x{kw}"
        return f"{'sep' if self.separable else 'conv'}{kh}x{kw}"

    @property
    def padding(self) -> tuple[int, int]:
        return self.kernel[0] // 2, self.kernel[1] // 2

    def param_count(self, cin: int, cout: int) -> int:
        kh, kw = self.kernel
        if self.kind == "pool":
            return 0 if cin == cout else cin * cout + cout
        if self.separable:  # depthwise weight + bias, pointwise weight + bias, BN affine
            return cin * kh * kw + cin + cout * cin + cout + 2 * cout
        return cout * cin * kh * kw + cout + 2 * cout  # conv weight + conv bias + BN affine

    def weight_count(self, cin: int, cout: int) -> int:
        """The op's conv and linear weights: param_count less biases and BatchNorm's affine."""
        kh, kw = self.kernel
        if self.kind == "pool":
            return 0 if cin == cout else cin * cout
        if self.separable:
            return cin * kh * kw + cout * cin
        return cout * cin * kh * kw

    def mac_count(self, cin: int, cout: int, hw: int) -> int:
        kh, kw = self.kernel
        if self.kind == "pool":
            return 0 if cin == cout else hw * cin * cout
        if self.separable:
            return hw * (cin * kh * kw + cin * cout)
        return hw * cout * cin * kh * kw

    def budget_units(self, cin_ratio: float, cout_ratio: float) -> float:
        """The op's weight count in channel-ratio units, as the §1.6 budget counts it: k²·Cin·Cout,
        separable k²·Cin + Cin·Cout, pools 0 (step 2)."""
        kh, kw = self.kernel
        if self.kind == "pool":
            return 0.0
        if self.separable:
            return kh * kw * cin_ratio + cin_ratio * cout_ratio
        return kh * kw * cin_ratio * cout_ratio


def node_op(name: str, conv_type: str = "normal") -> NodeOp:
    """The operation called ``name`` (one of OP_NAMES); ``conv_type`` applies to conv operations."""
    if name in CONV_OPS:
        return NodeOp("conv", CONV_OPS[name], conv_type == "separable")
    k = POOL_OPS[name]
    return NodeOp("pool", (k, k))


CONV3X3 = NodeOp()
SEP3X3 = NodeOp(separable=True)


@dataclass(frozen=True)
class OpGraph:
    """A bottom-level graph: a DAG whose nodes are ops, all of them outputting the cell's channels.

    ``merges[i]`` is how node i merges its inputs: ``"pass"`` for a node with fewer than two.
    """

    dag: Dag
    ops: tuple[NodeOp, ...]
    merges: tuple[str, ...]


@dataclass(frozen=True)
class Cell:
    """A top-level node: a mid-level DAG whose nodes are op-graphs, run at one stage's width and resolution.

    ``in_channels`` is the width of the cell's merged input (see Architecture.top_merge); the cell's
    input ops convert it to ``channels``. ``merges`` are the mid-level nodes' merges.
    """

    stage: int
    in_channels: int
    channels: int
    resolution: tuple[int, int]
    dag: Dag
    op_graphs: tuple[OpGraph, ...]
    merges: tuple[str, ...]


@dataclass(frozen=True)
class Edge:
    """One input of a merge: source (-1 = the level's input), pooling steps, how it enters, its width.

    ``kind`` is ``"pass"`` (used as is), ``"gate"`` (sigmoid(w)·x, w initialised to 1) or
    ``"proj"`` (1x1 conv with bias from ``channels`` to the merge's width).
    """

    src: int
    steps: int
    kind: str
    channels: int


@dataclass(frozen=True)
class Merge:
    """How a node turns its inputs into one tensor of ``channels`` channels (NAGO.md §1.5).

    ``kind``:
    - ``"pass"``: a single input, used as is;
    - ``"sum"``: each input gated, or 1x1-projected when its width differs from the last input's
      (the merge's width), then summed;
    - ``"concat"``: the inputs concatenated along channels in edge order (width: their sum);
    - ``"attention"``: inputs projected to the last input's width where they differ; the first gives
      a per-sample min-max-normalised mask m, the others sum to s, and out = sigmoid(w)·s + s·m with
      one learnable w per node (initialised to 1);
    - ``"mean"``: a graph's outputs, projected where they differ, averaged.
    """

    kind: str
    edges: tuple[Edge, ...]
    channels: int


def merged_width(widths: Sequence[float], kind: str) -> float:
    """Width of a merge of inputs with ``widths`` (channels, or channel ratios for the budget)."""
    return sum(widths) if kind == "concat" and len(widths) > 1 else widths[-1]


def merge_inputs(sources: Sequence[tuple[int, int, int]], kind: str) -> Merge:
    """The merge of a node's ``(src, pool steps, channels)`` inputs with merge ``kind`` (see Merge)."""
    if len(sources) == 1:
        s, steps, ch = sources[0]
        return Merge("pass", (Edge(s, steps, "pass", ch),), ch)
    width = int(merged_width([ch for _, _, ch in sources], kind))
    if kind == "concat":
        edges = tuple(Edge(s, steps, "pass", ch) for s, steps, ch in sources)
    else:
        match = "gate" if kind == "sum" else "pass"
        edges = tuple(Edge(s, steps, match if ch == width else "proj", ch) for s, steps, ch in sources)
    return Merge(kind, edges, width)


def inner_merge(dag: Dag, merges: Sequence[str], i: int, channels: int, in_channels: int) -> Merge:
    """The merge of node i of a mid or bottom graph whose nodes output ``channels`` and whose input
    (what its input nodes receive) has ``in_channels``."""
    if not dag.preds[i]:
        return Merge("pass", (Edge(-1, 0, "pass", in_channels),), in_channels)
    return merge_inputs([(j, 0, channels) for j in dag.preds[i]], merges[i])


def outputs_merge(dag: Dag, channels: int) -> Merge:
    """The average of a mid or bottom graph's output nodes."""
    return Merge("mean", tuple(Edge(j, 0, "pass", channels) for j in dag.outputs), channels)


@dataclass(frozen=True)
class Architecture:
    """A fully resolved network description: everything network.build_network needs, picklable.

    Shapes: input ``[N, in_channels, *image_size]``; stage s runs at ``stage_resolutions[s]`` with
    ``stage_channels[s]`` channels; output logits ``[N, num_classes]``. ``top_merges[i]`` is how
    cell i merges its inputs.
    """

    seed: int
    in_channels: int
    image_size: tuple[int, int]
    num_classes: int
    multiplier: int
    stage_channels: tuple[int, ...]
    stage_resolutions: tuple[tuple[int, int], ...]
    stem: str  # "small": two 3x3 convs at full size; "large": two stride-2 separable convs (/4)
    stem_resolution: tuple[int, int]
    top: Dag
    top_merges: tuple[str, ...]
    cells: tuple[Cell, ...]
    head_width: int
    share_graphs: bool = False
    dropout: float = HEAD_DROPOUT
    space: str = "hnag"  # "rnag": top is a chain of one cell per stage, each op-graph a single SEP3X3

    # ---- derived structure, shared by network.py and the counts

    @property
    def stem_channels(self) -> int:
        return self.stage_channels[0]

    @property
    def out_channels(self) -> int:
        """Channels after the top-level output merge: those of the last output cell."""
        return self.cells[self.top.outputs[-1]].channels

    @property
    def out_stage(self) -> int:
        return self.cells[self.top.outputs[-1]].stage

    def top_merge(self, i: int) -> Merge:
        """Cell i's input: its predecessors pooled from their stage to cell i's and merged (NAGO.md §1.5);
        an input cell reads the stem output, pooled to its stage."""
        cell = self.cells[i]
        preds = self.top.preds[i]
        if not preds:
            return Merge("pass", (Edge(-1, cell.stage, "pass", self.stem_channels),), self.stem_channels)
        return merge_inputs([(j, cell.stage - self.cells[j].stage, self.cells[j].channels) for j in preds],
                            self.top_merges[i])

    def top_out_merge(self) -> Merge:
        """Top outputs, pooled to the last output's stage, projected to its channels where they differ,
        averaged (NAGO.md §1.4)."""
        return Merge("mean", tuple(
            Edge(j, self.out_stage - self.cells[j].stage,
                 "pass" if self.cells[j].channels == self.out_channels else "proj", self.cells[j].channels)
            for j in self.top.outputs), self.out_channels)

    def cell_merges(self, i: int) -> Iterator[tuple[Merge, tuple[Merge, ...]]]:
        """Per mid node of cell i: its merge, and the merges of its op-graph's nodes."""
        cell = self.cells[i]
        for m, g in enumerate(cell.op_graphs):
            mm = inner_merge(cell.dag, cell.merges, m, cell.channels, cell.in_channels)
            yield mm, tuple(inner_merge(g.dag, g.merges, b, cell.channels, mm.channels) for b in range(g.dag.n))

    # ---- counts

    def param_count(self) -> int:
        """Number of trainable parameters of build_network(self), computed without torch."""
        total = _stem_params(self.stem, self.in_channels, self.stem_channels)
        for i, cell in enumerate(self.cells):
            total += _merge_params(self.top_merge(i))
            for (mm, bms), g in zip(self.cell_merges(i), cell.op_graphs):
                total += _merge_params(mm)
                total += sum(_merge_params(bm) + op.param_count(bm.channels, cell.channels)
                             for op, bm in zip(g.ops, bms))
        total += _merge_params(self.top_out_merge())
        return total + _head_params(self.out_channels, self.head_width, self.num_classes)

    def weight_count(self) -> int:
        """Conv and linear weights of build_network(self), computed without torch: param_count less
        every bias, gate and BatchNorm affine (what int8 quantisation stores in one byte each)."""
        total = _stem_params(self.stem, self.in_channels, self.stem_channels, weights_only=True)
        for i, cell in enumerate(self.cells):
            total += _merge_params(self.top_merge(i), weights_only=True)
            for (mm, bms), g in zip(self.cell_merges(i), cell.op_graphs):
                total += _merge_params(mm, weights_only=True)
                total += sum(_merge_params(bm, weights_only=True) + op.weight_count(bm.channels, cell.channels)
                             for op, bm in zip(g.ops, bms))
        total += _merge_params(self.top_out_merge(), weights_only=True)
        return total + _head_params(self.out_channels, self.head_width, self.num_classes, weights_only=True)

    def mac_count(self) -> int:
        """Multiply-accumulates of one forward pass at batch 1 (convs and linear; pooling/BN/gates 0)."""
        total = _stem_macs(self.stem, self.in_channels, self.stem_channels, self.image_size,
                           self.stem_resolution)
        for i, cell in enumerate(self.cells):
            hw = cell.resolution[0] * cell.resolution[1]
            total += _merge_params(self.top_merge(i), weights_only=True) * hw
            for (mm, bms), g in zip(self.cell_merges(i), cell.op_graphs):
                total += _merge_params(mm, weights_only=True) * hw
                total += sum(_merge_params(bm, weights_only=True) * hw + op.mac_count(bm.channels, cell.channels, hw)
                             for op, bm in zip(g.ops, bms))
        r = self.stage_resolutions[self.out_stage]
        total += _merge_params(self.top_out_merge(), weights_only=True) * r[0] * r[1]
        c = self.out_channels
        if self.head_width:
            total += r[0] * r[1] * c * self.head_width + self.head_width * self.num_classes
        else:
            total += c * self.num_classes
        return total

    def summary(self) -> dict[str, Any]:
        """Sizes at a glance: nodes per level, width, resolution per stage, operations, params, MACs."""
        ops: dict[str, int] = {}
        merges: dict[str, int] = {}
        for c in self.cells:
            for g in c.op_graphs:
                for op in g.ops:
                    ops[op.name] = ops.get(op.name, 0) + 1
        for names in (self.top_merges, *(c.merges for c in self.cells),
                      *(g.merges for c in self.cells for g in c.op_graphs)):
            for name in names:
                if name != "pass":
                    merges[name] = merges.get(name, 0) + 1
        return {
            "top_cells": len(self.cells),
            "mid_nodes": sum(c.dag.n for c in self.cells),
            "op_nodes": sum(g.dag.n for c in self.cells for g in c.op_graphs),
            "stages": tuple(c.stage for c in self.cells),
            "multiplier": self.multiplier,
            "stage_channels": self.stage_channels,
            "stage_resolutions": self.stage_resolutions,
            "stem": self.stem,
            "space": self.space,
            "head_width": self.head_width,
            "ops": dict(sorted(ops.items())),
            "merges": dict(sorted(merges.items())),
            "params": self.param_count(),
            "macs": self.mac_count(),
        }

    def to_networkx(self) -> dict[str, nx.DiGraph]:
        """The three levels as DiGraphs (for drawing): ``top`` nodes are cell indices, ``mid`` nodes
        ``(cell, m)``, ``bottom`` nodes ``(cell, m, b)``; every node carries its stage, channels, input
        width and merge, bottom nodes their operation."""
        top, mid, bottom = nx.DiGraph(), nx.DiGraph(), nx.DiGraph()
        for i, c in enumerate(self.cells):
            top.add_node(i, stage=c.stage, channels=c.channels, in_channels=c.in_channels,
                         resolution=c.resolution, role=_role(self.top, i), merge=self.top_merges[i])
            for m, ((mm, bms), g) in enumerate(zip(self.cell_merges(i), c.op_graphs)):
                mid.add_node((i, m), cell=i, stage=c.stage, channels=c.channels, in_channels=mm.channels,
                             role=_role(c.dag, m), merge=c.merges[m])
                for b, (op, bm) in enumerate(zip(g.ops, bms)):
                    bottom.add_node((i, m, b), cell=i, mid=m, stage=c.stage, channels=c.channels,
                                    in_channels=bm.channels, kernel=op.kernel, op=op.name,
                                    role=_role(g.dag, b), merge=g.merges[b])
                bottom.add_edges_from(((i, m, a), (i, m, b)) for a, b in g.dag.edges)
            mid.add_edges_from(((i, a), (i, b)) for a, b in c.dag.edges)
        top.add_edges_from(self.top.edges)
        return {"top": top, "mid": mid, "bottom": bottom}


def _role(dag: Dag, i: int) -> str:
    return "/".join(r for r, on in (("input", i in dag.inputs), ("output", i in dag.outputs)) if on) or "inner"


# ---------------------------------------------------------------------------------------------- counts


def _conv_params(cin: int, cout: int, k: int = 1, groups: int = 1, weights_only: bool = False) -> int:
    return cout * (cin // groups) * k * k + (0 if weights_only else cout)


def _merge_params(mg: Merge, weights_only: bool = False) -> int:
    """Parameters of a merge's gates and projections (``weights_only``: projection weights, for MACs)."""
    n = 0
    for e in mg.edges:
        if e.kind == "gate":
            n += 0 if weights_only else 1
        elif e.kind == "proj":
            n += e.channels * mg.channels + (0 if weights_only else mg.channels)
    if mg.kind == "attention" and not weights_only:
        n += 1
    return n


def stem_half(c1: int) -> int:
    """Width after the first stride-2 separable conv of the large-image stem."""
    return max(1, c1 // 2)


def _stem_params(kind: str, cin: int, c1: int, weights_only: bool = False) -> int:
    w = weights_only
    bn = 0 if w else 2
    if kind == "small":
        return _conv_params(cin, c1, 3, weights_only=w) + bn * c1 + _conv_params(c1, c1, 3, weights_only=w) + bn * c1
    h = stem_half(c1)
    return (_conv_params(cin, cin, 3, groups=cin, weights_only=w) + _conv_params(cin, h, weights_only=w) + bn * h
            + _conv_params(h, h, 3, groups=h, weights_only=w) + _conv_params(h, c1, weights_only=w) + bn * c1)


def _stem_macs(kind: str, cin: int, c1: int, size: tuple[int, int], out: tuple[int, int]) -> int:
    if kind == "small":
        hw = size[0] * size[1]
        return hw * c1 * cin * 9 + hw * c1 * c1 * 9
    h = stem_half(c1)
    hw1 = _halve(size[0]) * _halve(size[1])
    hw2 = out[0] * out[1]
    return hw1 * cin * 9 + hw1 * cin * h + hw2 * h * 9 + hw2 * h * c1


def _head_params(cin: int, width: int, classes: int, weights_only: bool = False) -> int:
    if weights_only:
        return cin * width + width * classes if width else cin * classes
    if width:
        return _conv_params(cin, width) + 2 * width + width * classes + classes
    return cin * classes + classes


# -------------------------------------------------------------------------------------------- sampling


def _halve(r: int) -> int:
    """One avg_pool2d(2, 2, ceil_mode=True) step (and one stride-2, pad-1, 3x3 conv): ceil(r / 2)."""
    return (r + 1) // 2


def stage_list(n_cells: int, stage_ratios: Sequence[float]) -> list[int]:
    """Stage of each top-level cell in index order (NAGO.md §1.7).

    The stage increments at cell x when ``x >= threshold``; the threshold starts at θ_S[0]·N_t and
    grows by θ_S[s]·N_t on entering stage s. When N_t >= the number of stages S, the stages are then
    raised just enough that every stage holds at least one cell (the last S - 1 - s cells are forced
    past stage s); this changes nothing for the 1/3 ratios and makes N_t == S one cell per stage.
    When N_t < S, the cells take stages 0..N_t-1, one each: the later stages (and their
    downsampling) are absent from the network.
    """
    n_stages = len(stage_ratios)
    if n_cells <= n_stages:
        return list(range(n_cells))
    stages, stage = [], 0
    threshold = stage_ratios[0] * n_cells
    for x in range(n_cells):
        if x >= threshold - 1e-9 and stage < n_stages - 1:  # tolerance: 1/3*6 must reach 2.0
            stage += 1
            threshold += stage_ratios[stage] * n_cells
        stages.append(max(stage, n_stages - n_cells + x))
    return stages


def _draw(level: LevelConfig, rng: np.random.Generator) -> Dag:
    return orient(sample_graph(level.graph, level.params, rng))


class _Categorical:
    """Draws names from relative weights; all weights zero means uniform over the names given.

    ``only`` restricts the draw to those names (weights renormalised; ``fallback`` when none is named).
    """

    def __init__(self, weights: Mapping[str, float], only: Sequence[str] | None = None, fallback: str = ""):
        names = [k for k in weights if only is None or k in only] or [fallback]
        w = np.array([weights.get(k, 0.0) for k in names], dtype=float)
        self.names = tuple(names)
        self.p = w / w.sum() if w.sum() > 0 else np.full(len(names), 1.0 / len(names))

    def __call__(self, rng: np.random.Generator) -> str:
        return self.names[0] if len(self.names) == 1 else self.names[rng.choice(len(self.names), p=self.p)]


def _draw_merges(dag: Dag, draw: _Categorical, rng: np.random.Generator) -> tuple[str, ...]:
    """One merge per node with two or more inputs (``"pass"`` for the others), in node order."""
    return tuple(draw(rng) if len(ps) > 1 else "pass" for ps in dag.preds)


def _check_sample_args(seed: int, in_channels: int, h: int, w: int, num_classes: int) -> None:
    problems = []
    if seed < 0:
        problems.append(f"seed = {seed}: `seed >= 0` must hold")
    if in_channels < 1:
        problems.append(f"in_channels = {in_channels}: `in_channels >= 1` must hold")
    if h < 1 or w < 1:
        problems.append(f"image_size = {(h, w)}: both sides must be >= 1")
    if num_classes < 1:
        problems.append(f"num_classes = {num_classes}: `num_classes >= 1` must hold")
    if problems:
        raise SpecError(problems)


def _choice_rng(seed: int) -> np.random.Generator:
    """The stream for merges and operations, apart from the graphs' so that a degenerate θ_M, θ_op
    (the paper's sum / conv3x3) leaves the drawn graphs exactly as they are without them."""
    return np.random.default_rng([seed, 1])


def sample_architecture(config: HnagConfig | RnagConfig, seed: int, *, in_channels: int,
                        image_size: tuple[int, int], num_classes: int) -> Architecture:
    """Draw one architecture from the generator ``config``; the same seed gives the same architecture.

    An RnagConfig goes to sample_rnag_architecture; what follows describes the HNAG case.

    The graphs come from one ``np.random.default_rng(seed)`` in a fixed order: the top graph, then per
    cell its mid graph followed by one bottom graph per mid node (with ``share_graphs``: one top, one
    mid, one bottom graph). Merges and operations come from a second stream in the same order: the
    top nodes' merges, then per cell its mid merges and per op-graph its merges and operations.
    Each node with two or more inputs draws its merge from its level's θ_M; each op draws from θ_op,
    output ops only among the convs (NAGO.md §1.3). Width follows NAGO.md §1.6.
    """
    if isinstance(config, RnagConfig):
        return sample_rnag_architecture(config, seed, in_channels=in_channels, image_size=image_size,
                                        num_classes=num_classes)
    h, w = (int(s) for s in image_size)
    _check_sample_args(seed, in_channels, h, w, num_classes)

    rng, crng = np.random.default_rng(seed), _choice_rng(seed)
    any_op = _Categorical(config.ops)
    conv_op = _Categorical(config.ops, only=CONV_OP_NAMES, fallback="conv3x3")
    mid_merge, bottom_merge = _Categorical(config.mid.merge), _Categorical(config.bottom.merge)

    def op_graph(dag: Dag) -> OpGraph:
        merges = _draw_merges(dag, bottom_merge, crng)
        ops = tuple(node_op((conv_op if b in dag.outputs else any_op)(crng), config.conv_type) for b in range(dag.n))
        return OpGraph(dag, ops, merges)

    top = _draw(config.top, rng)
    top_merges = _draw_merges(top, _Categorical(config.top.merge), crng)
    cells: list[tuple[Dag, tuple[str, ...], tuple[OpGraph, ...]]] = []
    if config.share_graphs:
        mid = _draw(config.mid, rng)
        bottom = _draw(config.bottom, rng)
        shared = op_graph(bottom)
        cells = [(mid, _draw_merges(mid, mid_merge, crng), (shared,) * mid.n)] * top.n
    else:
        for _ in range(top.n):
            mid = _draw(config.mid, rng)
            bottoms = [_draw(config.bottom, rng) for _ in range(mid.n)]
            cells.append((mid, _draw_merges(mid, mid_merge, crng), tuple(op_graph(b) for b in bottoms)))
    return resolve_hnag(config, top, top_merges, cells, seed=seed, in_channels=in_channels,
                        image_size=(h, w), num_classes=num_classes)


def _cell_units(mid: Dag, merges: Sequence[str], op_graphs: Sequence[OpGraph], in_width: float,
                width: float) -> float:
    """Σ of a cell's ops' budget units with widths in channel-ratio units (NAGO.md §1.6 step 2)."""
    units = 0.0
    for m, g in enumerate(op_graphs):
        gin = merged_width([width] * len(mid.preds[m]), merges[m]) if mid.preds[m] else in_width
        for b, op in enumerate(g.ops):
            cin = gin if not g.dag.preds[b] else merged_width([width] * len(g.dag.preds[b]), g.merges[b])
            units += op.budget_units(cin, width)
    return units


def _in_widths(top: Dag, top_merges: Sequence[str], widths: Sequence[float], stem: float) -> list[float]:
    """The width of each cell's merged input, given each cell's own width."""
    return [merged_width([widths[j] for j in top.preds[i]], top_merges[i]) if top.preds[i] else stem
            for i in range(top.n)]


def resolve_hnag(config: HnagConfig, top: Dag, top_merges: Sequence[str],
                 cells: Sequence[tuple[Dag, Sequence[str], Sequence[OpGraph]]], *, seed: int, in_channels: int,
                 image_size: tuple[int, int], num_classes: int) -> Architecture:
    """Resolve drawn graphs (the top DAG and its merges; per cell its mid DAG, mid merges and one
    op-graph per mid node) into an Architecture: stages (§1.7), width from the budget (§1.6),
    resolutions and the stem (§1.5).

    multiplier = max(1, int(sqrt(budget / base))), base = Σ over all ops of their weights in
    channel-ratio units; a concat-merged input counts the sum of its inputs' ratios.
    """
    h, w = image_size
    if len(cells) != top.n or any(len(ogs) != mid.n or len(mm) != mid.n for mid, mm, ogs in cells):
        raise ValueError("need one (mid DAG, mid merges, op-graphs) per top node and one op-graph per mid node")
    stages = stage_list(top.n, config.stage_ratios)
    cr = config.channel_ratios
    ratios = [cr[s] for s in stages]
    in_ratio = _in_widths(top, top_merges, ratios, cr[0])
    base = sum(_cell_units(mid, mm, ogs, in_ratio[i], ratios[i]) for i, (mid, mm, ogs) in enumerate(cells))
    multiplier = max(1, int(math.sqrt(config.param_budget / base))) if base > 0 else 1
    stage_channels = tuple(max(1, round(r * multiplier)) for r in cr)
    channels = [stage_channels[s] for s in stages]
    in_channels_ = _in_widths(top, top_merges, channels, stage_channels[0])

    stem, stem_resolution, resolutions = _stem_and_resolutions(h, w, len(cr))
    resolved = tuple(
        Cell(stages[i], int(in_channels_[i]), channels[i], resolutions[stages[i]], mid, tuple(ogs), tuple(mm))
        for i, (mid, mm, ogs) in enumerate(cells))
    return Architecture(
        seed=seed, in_channels=in_channels, image_size=(h, w), num_classes=num_classes, multiplier=multiplier,
        stage_channels=stage_channels, stage_resolutions=tuple(resolutions), stem=stem,
        stem_resolution=stem_resolution, top=top, top_merges=tuple(top_merges), cells=resolved,
        head_width=config.head_width, share_graphs=config.share_graphs)


def _stem_and_resolutions(h: int, w: int, n_stages: int) -> tuple[str, tuple[int, int], tuple[tuple[int, int], ...]]:
    """The stem kind, its output size and each stage's resolution (halved per stage, NAGO.md §1.5)."""
    if min(h, w) < SMALL_IMAGE_LIMIT:
        stem, res = "small", (h, w)
    else:
        stem, res = "large", (_halve(_halve(h)), _halve(_halve(w)))
    stem_resolution = res
    resolutions = []
    for _ in range(n_stages):
        resolutions.append(res)
        res = (_halve(res[0]), _halve(res[1]))
    return stem, stem_resolution, tuple(resolutions)


def _chain(n: int) -> Dag:
    """The path 0 -> 1 -> ... -> n-1."""
    return Dag(tuple(() if i == 0 else (i - 1,) for i in range(n)), (0,), (n - 1,))


def sample_rnag_architecture(config: RnagConfig, seed: int, *, in_channels: int, image_size: tuple[int, int],
                             num_classes: int) -> Architecture:
    """Draw one RandWire architecture (NAGO.md §4.2 RNAG); the same seed gives the same architecture.

    One ``np.random.default_rng(seed)`` draws the stage graphs in stage order, each independently
    (merges, when the stage level's θ_M is not plain sum, from the second stream as for HNAG).
    The result is an Architecture whose top level is a chain of one cell per stage; a cell is the
    stage's DAG (oriented low -> high) and each of its nodes a 1-op op-graph (ReLU -> separable 3x3
    -> BN). RandWire's unique input node is the cell input, which feeds every input node: the
    previous stage's output, pooled once (ceil-halving, none for stage 0) and at the previous
    stage's width, so the input nodes change the channels. Its unique output node is the average
    of the DAG's output nodes. Width follows NAGO.md §1.6 with separable ops:
    multiplier = max(1, int(sqrt(budget / base))), base = Σ over nodes of k²·Cin_ratio + Cin_ratio·Cout_ratio.
    """
    h, w = (int(s) for s in image_size)
    _check_sample_args(seed, in_channels, h, w, num_classes)
    rng, crng = np.random.default_rng(seed), _choice_rng(seed)
    dags = [_draw(config.stage, rng) for _ in range(config.num_stages)]
    merge = _Categorical(config.stage.merge)
    merges = [_draw_merges(d, merge, crng) for d in dags]
    return rnag_from_graphs(config, dags, merges, seed=seed, in_channels=in_channels, image_size=(h, w),
                            num_classes=num_classes)


def rnag_from_graphs(config: RnagConfig, dags: Sequence[Dag], merges: Sequence[Sequence[str]], *, seed: int,
                     in_channels: int, image_size: tuple[int, int], num_classes: int) -> Architecture:
    """Resolve one DAG (and its nodes' merges) per stage into a RandWire Architecture (see
    sample_rnag_architecture)."""
    h, w = image_size
    cr = config.channel_ratios
    if len(dags) != len(cr) or len(merges) != len(cr):
        raise ValueError(f"need one DAG and one merge tuple per stage ({len(cr)}), got {len(dags)}, {len(merges)}")
    op_graphs = [tuple(_SINGLE_SEP for _ in range(d.n)) for d in dags]
    in_ratio = [cr[max(s - 1, 0)] for s in range(len(cr))]  # stage 0 reads the stem, at stage-0 width
    base = sum(_cell_units(d, mm, ogs, in_ratio[s], cr[s]) for s, (d, mm, ogs) in enumerate(zip(dags, merges, op_graphs)))
    multiplier = max(1, int(math.sqrt(config.param_budget / base)))
    stage_channels = tuple(max(1, round(r * multiplier)) for r in cr)
    stem, stem_resolution, resolutions = _stem_and_resolutions(h, w, len(cr))
    cells = tuple(
        Cell(s, stage_channels[max(s - 1, 0)], stage_channels[s], resolutions[s], d, ogs, tuple(mm))
        for s, (d, mm, ogs) in enumerate(zip(dags, merges, op_graphs)))
    top = _chain(len(cr))
    return Architecture(
        seed=seed, in_channels=in_channels, image_size=(h, w), num_classes=num_classes, multiplier=multiplier,
        stage_channels=stage_channels, stage_resolutions=resolutions, stem=stem,
        stem_resolution=stem_resolution, top=top, top_merges=("pass",) * top.n, cells=cells,
        head_width=config.head_width, space="rnag")


_SINGLE = Dag(((),), (0,), (0,))
_SINGLE_SEP = OpGraph(_SINGLE, (SEP3X3,), ("pass",))
