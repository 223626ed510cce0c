"""Drawings of one architecture's three levels: the top graph by stage, one cell, one operation graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import networkx as nx

from nago_spec.generator import Architecture

_IN, _OUT = "in", "out"


def _layered(g: nx.DiGraph, labels: dict[Any, str]) -> tuple[nx.DiGraph, dict[Any, tuple[float, float]], dict[Any, str]]:
    """``g`` with an ``in`` source feeding its input nodes and an ``out`` sink after its outputs,
    laid out left to right by topological generation (the order tensors flow)."""
    h = nx.DiGraph(g)
    h.add_node(_IN)
    h.add_node(_OUT)
    h.add_edges_from((_IN, n) for n in g if g.in_degree(n) == 0)
    h.add_edges_from((n, _OUT) for n in g if g.out_degree(n) == 0)
    for layer, nodes in enumerate(nx.topological_generations(h)):
        for n in nodes:
            h.nodes[n]["layer"] = layer
    pos = nx.multipartite_layout(h, subset_key="layer")
    return h, pos, {**labels, _IN: "in", _OUT: "out"}


#: How a node's label shows its merge when it is not the default gated sum (one-input nodes: none).
_MERGE_MARKS = {"concat": "\n[cat]", "attention": "\n[att]"}


def _merge_mark(node: dict[str, Any]) -> str:
    return _MERGE_MARKS.get(node.get("merge", ""), "")


def _panel(ax: Any, g: nx.DiGraph, labels: dict[Any, str], colours: list[Any], title: str) -> None:
    h, pos, labels = _layered(g, labels)
    inner = list(g)
    nx.draw_networkx_edges(h, pos, ax=ax, arrows=True, arrowsize=10, edge_color="0.55", node_size=760)
    nx.draw_networkx_nodes(h, pos, nodelist=inner, node_color=colours, node_size=760, ax=ax, edgecolors="0.2")
    nx.draw_networkx_nodes(h, pos, nodelist=[_IN, _OUT], node_color="white", node_shape="s", node_size=560,
                           ax=ax, edgecolors="0.4")
    nx.draw_networkx_labels(h, pos, labels=labels, font_size=7, ax=ax)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def draw_architecture(arch: Architecture, path: Path, *, title: str = "") -> dict[str, Any]:
    """Write a PNG of ``arch``'s three levels to ``path``; returns which cell and op-graph are shown.

    The cell shown is the one with the most mid-level nodes, the operation graph the largest of
    that cell (the first on ties), so the drawing shows as much structure as the architecture has.
    Nodes that merge by concatenation or attention are marked [cat] or [att]; pooling ops are grey.
    An RNAG (RandWire) architecture draws the same way: its cells are the stages, its mid level a
    stage's random graph, and each operation graph a single separable-conv node.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    levels = arch.to_networkx()
    top = levels["top"]
    cmap = plt.get_cmap("tab10")
    cell = max(range(len(arch.cells)), key=lambda i: (arch.cells[i].dag.n, -i))
    c = arch.cells[cell]
    op_graph = max(range(len(c.op_graphs)), key=lambda m: (c.op_graphs[m].dag.n, -m))
    mid = levels["mid"].subgraph([(cell, m) for m in range(c.dag.n)])
    bottom = levels["bottom"].subgraph([(cell, op_graph, b) for b in range(c.op_graphs[op_graph].dag.n)])

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), dpi=110, gridspec_kw={"width_ratios": [1.3, 1, 1]})
    _panel(
        axes[0], top, {i: f"{i}\n{top.nodes[i]['channels']}ch{_merge_mark(top.nodes[i])}" for i in top},
        [cmap(top.nodes[i]["stage"] % 10) for i in top],
        (f"RandWire: a chain of {top.number_of_nodes()} stage graphs" if arch.space == "rnag"
         else f"top: {top.number_of_nodes()} cells in {len(arch.stage_channels)} stages"),
    )
    stages = sorted({top.nodes[i]["stage"] for i in top})
    axes[0].legend(
        handles=[Patch(color=cmap(s % 10), label=f"stage {s}: {arch.stage_channels[s]} ch, "
                       f"{'x'.join(map(str, arch.stage_resolutions[s]))}") for s in stages],
        loc="lower center", fontsize=7, frameon=False, ncol=min(3, len(stages)), bbox_to_anchor=(0.5, -0.12),
    )
    colour = cmap(c.stage % 10)
    _panel(axes[1], mid, {n: f"{n[1]}{_merge_mark(mid.nodes[n])}" for n in mid}, [colour] * mid.number_of_nodes(),
           f"stage {c.stage}: {mid.number_of_nodes()} nodes (ReLU-sep3x3-BN each)" if arch.space == "rnag"
           else f"mid: cell {cell}, {mid.number_of_nodes()} nodes (each an operation graph)")
    ops = [bottom.nodes[n]["op"] for n in bottom]
    _panel(
        axes[2], bottom, {n: f"{n[2]}\n{bottom.nodes[n]['op']}{_merge_mark(bottom.nodes[n])}" for n in bottom},
        [colour if not op.startswith("avgpool") else "0.85" for op in ops],
        f"bottom: cell {cell}, node {op_graph}: {bottom.number_of_nodes()} ops"
        + (" (ReLU-conv-BN each)" if all(op.startswith(("conv", "sep")) for op in ops) else ""),
    )
    fig.suptitle(title or f"{arch.param_count():,} parameters, {arch.mac_count():,} MACs", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return {"cell": cell, "op_graph": op_graph}
