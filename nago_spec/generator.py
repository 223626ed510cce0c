"""The three-level NAGO generator (NAGO.md §1) and the RandWire baseline (RNAG, §4.2): random graphs resolved into an Architecture."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from nago_spec.errors import RegistryError, SpecError
from nago_spec.graphs import GRAPH_MODELS, Dag, orient, sample_graph

#: Images whose smaller side is below this use the stride-1 stem; larger ones the /4 stem (NAGO.md §1.5).
SMALL_IMAGE_LIMIT = 40

#: Dropout before the classifier when the head has a 1x1 expansion (NAGO.md §1.5).
HEAD_DROPOUT = 0.2


# --------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class LevelConfig:
    """One level of the hierarchy: a graph model and its fixed parameter values.

    e.g. ``LevelConfig("ws", {"nodes": 6, "k": 4, "p": 0.5})``.
    """

    graph: str
    params: Mapping[str, int | float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", dict(self.params))  # detach from the caller's dict

    def problems(self, where: str) -> list[str]:
        """Every problem with this level, one line each (empty when valid)."""
        try:
            model = GRAPH_MODELS.get(self.graph)
        except RegistryError as e:
            return [f"{where}.graph = {self.graph!r}: {e}"]
        out = []
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
    """Everything that fixes a generator (NAGO.md §1.3): three levels, width budget, stage and channel ratios.

    ``head_width = 0`` pools the last features straight into the Linear classifier; ``share_graphs``
    reproduces upstream vega (one mid graph shared by all cells, one bottom graph by all op-graphs).
    """

    top: LevelConfig
    mid: LevelConfig
    bottom: LevelConfig
    param_budget: int
    stage_ratios: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3)
    channel_ratios: tuple[float, ...] = (1.0, 2.0, 4.0)
    head_width: int = 1280
    share_graphs: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage_ratios", tuple(float(r) for r in self.stage_ratios))
        object.__setattr__(self, "channel_ratios", tuple(float(r) for r in self.channel_ratios))
        problems = []
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
        object.__setattr__(self, "channel_ratios", tuple(float(r) for r in self.channel_ratios))
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
    """A bottom-level node operation: ReLU -> Conv(k x k, stride 1, same padding, bias) -> BN.

    ``separable``: the conv is depthwise k x k (groups = Cin, bias) then pointwise 1x1 (bias), as in
    RandWire's nodes ([RW] model/node.py; NAGO.md §1.3 ``conv_type='depthwise_separable'``).
    """

    kernel: int = 3
    separable: bool = False

    @property
    def name(self) -> str:
        return f"{'sep' if self.separable else 'conv'}{self.kernel}x{self.kernel}"

    def param_count(self, cin: int, cout: int) -> int:
        if self.separable:  # depthwise weight + bias, pointwise weight + bias, BN affine
            return cin * self.kernel**2 + cin + cout * cin + cout + 2 * cout
        return cout * cin * self.kernel**2 + cout + 2 * cout  # conv weight + conv bias + BN affine

    def mac_count(self, cin: int, cout: int, hw: int) -> int:
        if self.separable:
            return hw * (cin * self.kernel**2 + cin * cout)
        return hw * cout * cin * self.kernel**2

    def budget_units(self, cin_ratio: float, cout_ratio: float) -> float:
        """The op's weight count in channel-ratio units, as the §1.6 budget counts it
        (separable: k²·Cin + Cin·Cout, §1.6 step 2)."""
        if self.separable:
            return self.kernel**2 * cin_ratio + cin_ratio * cout_ratio
        return self.kernel**2 * cin_ratio * cout_ratio


CONV3X3 = NodeOp(3)
SEP3X3 = NodeOp(3, separable=True)


@dataclass(frozen=True)
class OpGraph:
    """A bottom-level graph: a DAG whose nodes are ops (all ops of a cell output the cell's channels)."""

    dag: Dag
    ops: tuple[NodeOp, ...]


@dataclass(frozen=True)
class Cell:
    """A top-level node: a mid-level DAG whose nodes are op-graphs, run at one stage's width and resolution.

    ``in_channels`` is the width of the merged input (the last predecessor's, or the stem's for an
    input cell); the cell's input ops convert it to ``channels``.
    """

    stage: int
    in_channels: int
    channels: int
    resolution: tuple[int, int]
    dag: Dag
    op_graphs: tuple[OpGraph, ...]


@dataclass(frozen=True)
class Edge:
    """One merged input of a node: source (-1 = the level's input), pooling steps, and its merge.

    ``kind`` is ``"pass"`` (a node with one input: used as is), ``"gate"`` (sigmoid(w)*x) or
    ``"proj"`` (1x1 conv from ``channels`` to the node's inplanes, with bias).
    """

    src: int
    steps: int
    kind: str
    channels: int


@dataclass(frozen=True)
class Architecture:
    """A fully resolved network description: everything network.build_network needs, picklable.

    Shapes: input ``[N, in_channels, *image_size]``; stage s runs at ``stage_resolutions[s]`` with
    ``stage_channels[s]`` channels; output logits ``[N, num_classes]``.
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

    def top_in_edges(self, i: int) -> tuple[Edge, ...]:
        """Cell i's inputs: pooled from their stage to cell i's stage, gated or projected (NAGO.md §1.5)."""
        cell = self.cells[i]
        preds = self.top.preds[i]
        if not preds:
            return (Edge(-1, cell.stage, "pass", self.stem_channels),)
        return merge_edges([(j, cell.stage - self.cells[j].stage, self.cells[j].channels) for j in preds],
                           cell.in_channels)

    def top_out_edges(self) -> tuple[Edge, ...]:
        """Top outputs, pooled to the last output's stage and projected to its channels when they differ."""
        return tuple(
            Edge(j, self.out_stage - self.cells[j].stage,
                 "pass" if self.cells[j].channels == self.out_channels else "proj", self.cells[j].channels)
            for j in self.top.outputs)

    # ---- counts

    def param_count(self) -> int:
        """Number of trainable parameters of build_network(self), computed without torch."""
        total = _stem_params(self.stem, self.in_channels, self.stem_channels)
        for i, cell in enumerate(self.cells):
            total += _edges_params(self.top_in_edges(i), cell.in_channels) + _cell_params(cell)
        total += _edges_params(self.top_out_edges(), self.out_channels)
        return total + _head_params(self.out_channels, self.head_width, self.num_classes)

    def mac_count(self) -> int:
        """Multiply-accumulates of one forward pass at batch 1 (convs and linear; pooling/BN/gates 0)."""
        total = _stem_macs(self.stem, self.in_channels, self.stem_channels, self.image_size,
                           self.stem_resolution)
        for i, cell in enumerate(self.cells):
            hw = cell.resolution[0] * cell.resolution[1]
            total += _edges_params(self.top_in_edges(i), cell.in_channels, weights_only=True) * hw
            total += _cell_macs(cell)
        r = self.stage_resolutions[self.out_stage]
        total += _edges_params(self.top_out_edges(), self.out_channels, weights_only=True) * r[0] * r[1]
        c = self.out_channels
        if self.head_width:
            total += r[0] * r[1] * c * self.head_width + self.head_width * self.num_classes
        else:
            total += c * self.num_classes
        return total

    def summary(self) -> dict[str, Any]:
        """Sizes at a glance: nodes per level, width, resolution per stage, params, MACs."""
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
            "params": self.param_count(),
            "macs": self.mac_count(),
        }

    def to_networkx(self) -> dict[str, nx.DiGraph]:
        """The three levels as DiGraphs (for drawing): ``top`` nodes are cell indices, ``mid`` nodes
        ``(cell, m)``, ``bottom`` nodes ``(cell, m, b)``; every node carries stage and channels."""
        top, mid, bottom = nx.DiGraph(), nx.DiGraph(), nx.DiGraph()
        for i, c in enumerate(self.cells):
            top.add_node(i, stage=c.stage, channels=c.channels, in_channels=c.in_channels,
                         resolution=c.resolution, role=_role(self.top, i))
            for m, g in enumerate(c.op_graphs):
                mid.add_node((i, m), cell=i, stage=c.stage, channels=c.channels, role=_role(c.dag, m))
                for b, op in enumerate(g.ops):
                    cin = c.in_channels if _is_cell_input_op(c, m, b) else c.channels
                    bottom.add_node((i, m, b), cell=i, mid=m, stage=c.stage, channels=c.channels,
                                    in_channels=cin, kernel=op.kernel, op=op.name, role=_role(g.dag, b))
                bottom.add_edges_from(((i, m, a), (i, m, b)) for a, b in g.dag.edges)
            mid.add_edges_from(((i, a), (i, b)) for a, b in c.dag.edges)
        top.add_edges_from(self.top.edges)
        return {"top": top, "mid": mid, "bottom": bottom}


def merge_edges(sources: Sequence[tuple[int, int, int]], inplanes: int) -> tuple[Edge, ...]:
    """Edges of a node from ``(src, pool steps, channels)``: one input passes; several are summed,
    each gated when its width equals ``inplanes`` (the last one's), else 1x1-projected (NAGO.md §1.5)."""
    if len(sources) == 1:
        s, steps, ch = sources[0]
        return (Edge(s, steps, "pass", ch),)
    return tuple(Edge(s, steps, "gate" if ch == inplanes else "proj", ch) for s, steps, ch in sources)


def inner_edges(dag: Dag, i: int, channels: int) -> tuple[Edge, ...]:
    """Edges of node i of a mid or bottom graph, where every node has the same width."""
    if not dag.preds[i]:
        return (Edge(-1, 0, "pass", channels),)
    return merge_edges([(j, 0, channels) for j in dag.preds[i]], channels)


def _role(dag: Dag, i: int) -> str:
    return "/".join(r for r, on in (("input", i in dag.inputs), ("output", i in dag.outputs)) if on) or "inner"


def _is_cell_input_op(cell: Cell, m: int, b: int) -> bool:
    return not cell.dag.preds[m] and not cell.op_graphs[m].dag.preds[b]


# ---------------------------------------------------------------------------------------------- counts


def _conv_params(cin: int, cout: int, k: int = 1, groups: int = 1) -> int:
    return cout * (cin // groups) * k * k + cout


def _edges_params(edges: Sequence[Edge], inplanes: int, weights_only: bool = False) -> int:
    n = 0
    for e in edges:
        if e.kind == "gate":
            n += 0 if weights_only else 1
        elif e.kind == "proj":
            n += e.channels * inplanes + (0 if weights_only else inplanes)
    return n


def _op_graph_params(g: OpGraph, cin: int, cout: int) -> int:
    n = 0
    for b, op in enumerate(g.ops):
        n += op.param_count(cout if g.dag.preds[b] else cin, cout)
        n += _edges_params(inner_edges(g.dag, b, cout), cout)
    return n


def _cell_params(cell: Cell) -> int:
    n = 0
    for m, g in enumerate(cell.op_graphs):
        n += _op_graph_params(g, cell.channels if cell.dag.preds[m] else cell.in_channels, cell.channels)
        n += _edges_params(inner_edges(cell.dag, m, cell.channels), cell.channels)
    return n


def _cell_macs(cell: Cell) -> int:
    hw = cell.resolution[0] * cell.resolution[1]
    n = 0
    for m, g in enumerate(cell.op_graphs):
        for b, op in enumerate(g.ops):
            cin = cell.in_channels if _is_cell_input_op(cell, m, b) else cell.channels
            n += op.mac_count(cin, cell.channels, hw)
    return n


def stem_half(c1: int) -> int:
    """Width after the first stride-2 separable conv of the large-image stem."""
    return max(1, c1 // 2)


def _stem_params(kind: str, cin: int, c1: int) -> int:
    if kind == "small":
        return _conv_params(cin, c1, 3) + 2 * c1 + _conv_params(c1, c1, 3) + 2 * c1
    h = stem_half(c1)
    return (_conv_params(cin, cin, 3, groups=cin) + _conv_params(cin, h) + 2 * h
            + _conv_params(h, h, 3, groups=h) + _conv_params(h, c1) + 2 * c1)


def _stem_macs(kind: str, cin: int, c1: int, size: tuple[int, int], out: tuple[int, int]) -> int:
    if kind == "small":
        hw = size[0] * size[1]
        return hw * c1 * cin * 9 + hw * c1 * c1 * 9
    h = stem_half(c1)
    hw1 = _halve(size[0]) * _halve(size[1])
    hw2 = out[0] * out[1]
    return hw1 * cin * 9 + hw1 * cin * h + hw2 * h * 9 + hw2 * h * c1


def _head_params(cin: int, width: int, classes: int) -> int:
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


def _op_graph(dag: Dag) -> OpGraph:
    return OpGraph(dag, (CONV3X3,) * dag.n)


def _budget_units(cell_dag: Dag, op_graphs: Sequence[OpGraph], cin_ratio: float, ratio: float) -> float:
    units = 0.0
    for m, g in enumerate(op_graphs):
        for b, op in enumerate(g.ops):
            is_input = not cell_dag.preds[m] and not g.dag.preds[b]
            units += op.budget_units(cin_ratio if is_input else ratio, ratio)
    return units


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


def sample_architecture(config: HnagConfig | RnagConfig, seed: int, *, in_channels: int,
                        image_size: tuple[int, int], num_classes: int) -> Architecture:
    """Draw one architecture from the generator ``config``; the same seed gives the same architecture.

    An RnagConfig goes to sample_rnag_architecture; what follows describes the HNAG case.

    All graphs come from one ``np.random.default_rng(seed)`` in a fixed order: the top graph, then per
    cell its mid graph followed by one bottom graph per mid node (with ``share_graphs``: one top, one
    mid, one bottom graph). Width follows NAGO.md §1.6: multiplier = max(1, int(sqrt(budget / base)))
    with base = Σ over all ops of k²·Cin_ratio·Cout_ratio.
    """
    if isinstance(config, RnagConfig):
        return sample_rnag_architecture(config, seed, in_channels=in_channels, image_size=image_size,
                                        num_classes=num_classes)
    h, w = (int(s) for s in image_size)
    _check_sample_args(seed, in_channels, h, w, num_classes)

    rng = np.random.default_rng(seed)
    top = _draw(config.top, rng)
    cells: list[tuple[Dag, tuple[Dag, ...]]] = []
    if config.share_graphs:
        mid = _draw(config.mid, rng)
        bottom = _draw(config.bottom, rng)
        cells = [(mid, (bottom,) * mid.n)] * top.n
    else:
        for _ in range(top.n):
            mid = _draw(config.mid, rng)
            cells.append((mid, tuple(_draw(config.bottom, rng) for _ in range(mid.n))))
    return architecture_from_graphs(config, top, cells, seed=seed, in_channels=in_channels,
                                    image_size=(h, w), num_classes=num_classes)


def architecture_from_graphs(config: HnagConfig, top: Dag, cells: Sequence[tuple[Dag, Sequence[Dag]]], *,
                             seed: int, in_channels: int, image_size: tuple[int, int],
                             num_classes: int) -> Architecture:
    """Resolve given graphs (the top DAG; per cell its mid DAG and one bottom DAG per mid node) into an
    Architecture: stages (§1.7), width from the budget (§1.6), resolutions and the stem (§1.5)."""
    h, w = image_size
    if len(cells) != top.n or any(len(bottoms) != mid.n for mid, bottoms in cells):
        raise ValueError("need one (mid DAG, bottom DAGs) per top node and one bottom DAG per mid node")
    cell_graphs = [(mid, tuple(_op_graph(b) for b in bottoms)) for mid, bottoms in cells]
    stages = stage_list(top.n, config.stage_ratios)
    cr = config.channel_ratios
    # a cell's merged input has the width of its last predecessor (the stem, stage-0 width, for none)
    in_stage = [stages[top.preds[i][-1]] if top.preds[i] else 0 for i in range(top.n)]
    base = sum(_budget_units(md, ogs, cr[in_stage[i]], cr[stages[i]]) for i, (md, ogs) in enumerate(cell_graphs))
    multiplier = max(1, int(math.sqrt(config.param_budget / base)))
    stage_channels = tuple(max(1, round(r * multiplier)) for r in cr)

    stem, stem_resolution, resolutions = _stem_and_resolutions(h, w, len(cr))

    cells = tuple(
        Cell(stages[i], stage_channels[in_stage[i]], stage_channels[stages[i]], resolutions[stages[i]], md, ogs)
        for i, (md, ogs) in enumerate(cell_graphs))
    return Architecture(
        seed=seed, in_channels=in_channels, image_size=(h, w), num_classes=num_classes, multiplier=multiplier,
        stage_channels=stage_channels, stage_resolutions=tuple(resolutions), stem=stem,
        stem_resolution=stem_resolution, top=top, cells=cells, head_width=config.head_width,
        share_graphs=config.share_graphs)


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

    One ``np.random.default_rng(seed)`` draws the stage graphs in stage order, each independently.
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
    rng = np.random.default_rng(seed)
    dags = [_draw(config.stage, rng) for _ in range(config.num_stages)]
    return rnag_from_graphs(config, dags, seed=seed, in_channels=in_channels, image_size=(h, w),
                            num_classes=num_classes)


def rnag_from_graphs(config: RnagConfig, dags: Sequence[Dag], *, seed: int, in_channels: int,
                     image_size: tuple[int, int], num_classes: int) -> Architecture:
    """Resolve one DAG per stage into a RandWire Architecture (see sample_rnag_architecture)."""
    h, w = image_size
    cr = config.channel_ratios
    if len(dags) != len(cr):
        raise ValueError(f"need one DAG per stage ({len(cr)}), got {len(dags)}")
    op_graphs = [tuple(OpGraph(_SINGLE, (SEP3X3,)) for _ in range(d.n)) for d in dags]
    in_ratio = [cr[max(s - 1, 0)] for s in range(len(cr))]  # stage 0 reads the stem, at stage-0 width
    base = sum(_budget_units(d, ogs, in_ratio[s], cr[s]) for s, (d, ogs) in enumerate(zip(dags, op_graphs)))
    multiplier = max(1, int(math.sqrt(config.param_budget / base)))
    stage_channels = tuple(max(1, round(r * multiplier)) for r in cr)
    stem, stem_resolution, resolutions = _stem_and_resolutions(h, w, len(cr))
    cells = tuple(
        Cell(s, stage_channels[max(s - 1, 0)], stage_channels[s], resolutions[s], d, ogs)
        for s, (d, ogs) in enumerate(zip(dags, op_graphs)))
    return Architecture(
        seed=seed, in_channels=in_channels, image_size=(h, w), num_classes=num_classes, multiplier=multiplier,
        stage_channels=stage_channels, stage_resolutions=resolutions, stem=stem,
        stem_resolution=stem_resolution, top=_chain(len(cr)), cells=cells, head_width=config.head_width,
        space="rnag")


_SINGLE = Dag(((),), (0,), (0,))
