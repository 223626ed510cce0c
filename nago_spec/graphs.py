"""Random-graph models (WS, ER, BA from networkx) and the low-to-high-index DAG rule of NAGO.md §1.4."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import networkx as nx
import numpy as np

from nago_spec.registry import Registry

#: Draws tried until a graph is connected (NAGO.md §1.4, the official code's ``tollerance``).
CONNECT_TRIES = 30


@dataclass(frozen=True)
class GraphParam:
    """One parameter of a graph model, with the bounds a spec value must respect."""

    name: str
    kind: type  # int or float
    low: float
    high: float | None  # None: unbounded above
    doc: str


@dataclass(frozen=True)
class GraphModel:
    """A random-graph model a spec names (``graph = "ws"``): its parameters and its builder."""

    name: str
    params: tuple[GraphParam, ...]
    build: Callable[[Mapping[str, float], np.random.Generator], nx.Graph]
    doc: str

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)


GRAPH_MODELS: Registry[GraphModel] = Registry("graph model", "nago_spec.graph_models")

_NODES = GraphParam("nodes", int, 1, None, "number of nodes N")
_PROB = GraphParam("p", float, 0.0, 1.0, "probability")


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


def _first_connected(draw: Callable[[int], nx.Graph], rng: np.random.Generator) -> nx.Graph:
    """Redraw up to CONNECT_TRIES times until connected; keep the last draw otherwise.

    A disconnected draw is still a valid network under the DAG rule (an isolated node is both an
    input and an output), so exhausting the tries is not an error.
    """
    g = nx.empty_graph(0)
    for _ in range(CONNECT_TRIES):
        g = draw(_seed(rng))
        if g.number_of_nodes() <= 1 or nx.is_connected(g):
            return g
    return g


def _ws(params: Mapping[str, float], rng: np.random.Generator) -> nx.Graph:
    n = int(params["nodes"])
    k = min(int(params["k"]), n - 1)  # the official code clamps K to N-1
    if n <= 2:  # too small for a ring lattice
        return nx.complete_graph(n)
    p = float(params["p"])
    try:
        return nx.connected_watts_strogatz_graph(n, k, p, tries=CONNECT_TRIES, seed=_seed(rng))
    except nx.NetworkXError:  # no connected draw within the tries: keep an unconditioned one
        return nx.watts_strogatz_graph(n, k, p, seed=_seed(rng))


def _er(params: Mapping[str, float], rng: np.random.Generator) -> nx.Graph:
    n, p = int(params["nodes"]), float(params["p"])
    return _first_connected(lambda s: nx.gnp_random_graph(n, p, seed=s), rng)


def _ba(params: Mapping[str, float], rng: np.random.Generator) -> nx.Graph:
    n = int(params["nodes"])
    m = min(int(params["m"]), n - 1)
    if m < 1:
        return nx.empty_graph(n)
    return nx.barabasi_albert_graph(n, m, seed=_seed(rng))


GRAPH_MODELS.register(
    "ws",
    GraphModel(
        "ws",
        (_NODES, GraphParam("k", int, 2, None, "ring neighbours K (clamped to N-1)"), _PROB),
        _ws,
        "connected Watts-Strogatz small-world graph",
    ),
)
GRAPH_MODELS.register("er", GraphModel("er", (_NODES, _PROB), _er, "Erdos-Renyi G(N, P) graph"))
GRAPH_MODELS.register(
    "ba",
    GraphModel(
        "ba",
        (_NODES, GraphParam("m", int, 1, None, "edges per new node M (clamped to N-1)")),
        _ba,
        "Barabasi-Albert preferential-attachment graph",
    ),
)


def sample_graph(model: str, params: Mapping[str, float], rng: np.random.Generator) -> nx.Graph:
    """Draw one undirected graph with nodes 0..N-1 from the named model."""
    g = GRAPH_MODELS.get(model).build(params, rng)
    return nx.convert_node_labels_to_integers(g, ordering="sorted")


@dataclass(frozen=True)
class Dag:
    """A graph oriented low -> high index (NAGO.md §1.4).

    ``preds[i]`` are node i's inputs in increasing order; input nodes have no predecessor and all
    receive the level's input tensor; output nodes have no successor and their results are merged.
    A 1-node graph is its own input and output.
    """

    preds: tuple[tuple[int, ...], ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    @property
    def n(self) -> int:
        return len(self.preds)

    @property
    def edges(self) -> list[tuple[int, int]]:
        return [(j, i) for i, ps in enumerate(self.preds) for j in ps]

    def to_networkx(self) -> nx.DiGraph:
        g = nx.DiGraph()
        g.add_nodes_from(range(self.n))
        g.add_edges_from(self.edges)
        return g


def orient(g: nx.Graph) -> Dag:
    """Orient every edge from the lower to the higher node index."""
    n = g.number_of_nodes()
    preds = tuple(tuple(sorted(j for j in g.neighbors(i) if j < i)) for i in range(n))
    succ = [0] * n
    for i in range(n):
        for j in preds[i]:
            succ[j] += 1
    inputs = tuple(i for i in range(n) if not preds[i])
    outputs = tuple(i for i in range(n) if succ[i] == 0)
    return Dag(preds, inputs, outputs)
