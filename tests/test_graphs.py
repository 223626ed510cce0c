"""Tests of the random-graph models and the DAG rule (NAGO.md §1.4) over many seeds."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest

from nago_spec.errors import RegistryError
from nago_spec.graphs import CONNECT_TRIES, GRAPH_MODELS, orient, sample_graph

PARAMS = {
    "ws": [{"nodes": n, "k": k, "p": p} for n in (1, 2, 3, 5, 10, 32) for k in (2, 4, 5) for p in (0.1, 0.5, 0.9)],
    "er": [{"nodes": n, "p": p} for n in (1, 2, 3, 5, 10, 32) for p in (0.1, 0.5, 0.9)],
    "ba": [{"nodes": n, "m": m} for n in (1, 2, 3, 5, 10, 32) for m in (1, 2, 4)],
}


def check_dag(g: nx.Graph) -> None:
    """The §1.4 rule: edges low -> high; inputs/outputs are the nodes without predecessors/successors;
    every node lies on a path from an input to an output."""
    dag = orient(g)
    n = g.number_of_nodes()
    assert dag.n == n and sorted(g.nodes) == list(range(n))
    assert all(j < i for i, ps in enumerate(dag.preds) for j in ps)
    assert all(list(ps) == sorted(set(ps)) for ps in dag.preds)
    assert {frozenset(e) for e in dag.edges} == {frozenset(e) for e in g.edges}  # no edge lost or added
    d = dag.to_networkx()
    assert nx.is_directed_acyclic_graph(d)
    assert dag.inputs == tuple(i for i in range(n) if d.in_degree(i) == 0)
    assert dag.outputs == tuple(i for i in range(n) if d.out_degree(i) == 0)
    for i in range(n):
        assert any(s == i or nx.has_path(d, s, i) for s in dag.inputs)
        assert any(t == i or nx.has_path(d, i, t) for t in dag.outputs)
    if n and nx.is_connected(g):
        assert 0 in dag.inputs and n - 1 in dag.outputs


@pytest.mark.parametrize("model", sorted(PARAMS))
def test_every_model_gives_a_valid_dag_over_many_seeds(model: str) -> None:
    rng = np.random.default_rng(0)
    for params in PARAMS[model]:
        connected = 0
        for _ in range(12):
            g = sample_graph(model, params, rng)
            assert g.number_of_nodes() == params["nodes"]
            check_dag(g)
            connected += g.number_of_nodes() <= 1 or nx.is_connected(g)
        # WS and ER redraw until connected (CONNECT_TRIES); BA is connected by construction. Only a
        # sparse ER graph (p = 0.1) may stay disconnected.
        if not (model == "er" and params["p"] == 0.1):
            assert connected == 12, params


def test_same_rng_state_same_graph_other_seeds_other_graphs() -> None:
    for model, params in (("ws", {"nodes": 10, "k": 4, "p": 0.5}), ("er", {"nodes": 10, "p": 0.4}),
                          ("ba", {"nodes": 10, "m": 2})):
        a = sample_graph(model, params, np.random.default_rng(7))
        b = sample_graph(model, params, np.random.default_rng(7))
        assert set(a.edges) == set(b.edges)
        draws = {frozenset(sample_graph(model, params, np.random.default_rng(s)).edges) for s in range(10)}
        assert len(draws) >= 8, model


def test_k_and_m_are_clamped_to_nodes_minus_one() -> None:
    for s in range(5):
        big = sample_graph("ws", {"nodes": 4, "k": 9, "p": 0.3}, np.random.default_rng(s))
        clamped = sample_graph("ws", {"nodes": 4, "k": 3, "p": 0.3}, np.random.default_rng(s))
        assert set(big.edges) == set(clamped.edges)
        assert set(sample_graph("ba", {"nodes": 3, "m": 7}, np.random.default_rng(s)).edges) == set(
            sample_graph("ba", {"nodes": 3, "m": 2}, np.random.default_rng(s)).edges)


def test_ws_is_a_small_world_ring_with_networkx_semantics() -> None:
    """p = 0 keeps the ring lattice: each node joined to its K//2 neighbours on each side (odd K acts as K-1)."""
    for k in (2, 3, 4, 5):
        g = sample_graph("ws", {"nodes": 10, "k": k, "p": 0.0}, np.random.default_rng(0))
        half = k // 2
        want = {frozenset((i, (i + d) % 10)) for i in range(10) for d in range(1, half + 1)}
        assert {frozenset(e) for e in g.edges} == want


def test_single_node_graphs_are_their_own_input_and_output() -> None:
    for model, params in (("ws", {"nodes": 1, "k": 2, "p": 0.5}), ("er", {"nodes": 1, "p": 0.5}),
                          ("ba", {"nodes": 1, "m": 1})):
        dag = orient(sample_graph(model, params, np.random.default_rng(0)))
        assert dag.n == 1 and dag.inputs == (0,) and dag.outputs == (0,) and dag.preds == ((),)


def test_disconnected_draws_are_kept_after_the_tries() -> None:
    """ER with p = 0 never connects: after CONNECT_TRIES draws the last is kept; isolated nodes are both
    inputs and outputs of the DAG."""
    assert CONNECT_TRIES == 30
    dag = orient(sample_graph("er", {"nodes": 5, "p": 0.0}, np.random.default_rng(0)))
    assert dag.inputs == dag.outputs == (0, 1, 2, 3, 4)


def test_orient_by_hand() -> None:
    g = nx.Graph([(0, 2), (1, 2), (2, 3), (1, 4), (3, 4)])
    g.add_node(5)
    dag = orient(g)
    assert dag.preds == ((), (), (0, 1), (2,), (1, 3), ())
    assert dag.inputs == (0, 1, 5) and dag.outputs == (4, 5)
    assert sorted(dag.edges) == sorted(itertools.chain([(0, 2), (1, 2), (2, 3), (1, 4), (3, 4)]))


def test_unknown_model_suggests_a_name() -> None:
    with pytest.raises(RegistryError, match="did you mean 'ws'"):
        sample_graph("wss", {"nodes": 3}, np.random.default_rng(0))
    assert set(GRAPH_MODELS.names()) >= {"ws", "er", "ba"}
