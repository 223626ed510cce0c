"""Plug-ins (issue 20, point 2): the registries are the only lists of names, so a data set, a search
strategy and a graph model from an installed distribution's entry points work in a spec like the
built-ins, in spawned workers too; and one registered from Python works in that process."""

from __future__ import annotations

import sys

import pytest

from nago_spec.errors import SpecError
from nago_spec.registry import DATASETS, STRATEGIES
from nago_spec.spec import Spec, load_spec
from nago_spec.store import Store, TrialState
from nago_spec.graphs import GRAPH_MODELS
from nago_spec.runners.run import RunOptions, run

from conftest import TINY_SPEC, install_plugin

PLUGIN = '''
import networkx as nx

from nago_spec.data import DATASETS
from nago_spec.graphs import GraphModel, GraphParam
from nago_spec.strategies.random import RandomStrategy


def eights(path):
    """The digits data set, in a plug-in's clothes."""
    return DATASETS.get("digits")(path)


def _ring(params, rng):
    return nx.cycle_graph(int(params["nodes"]))


ring = GraphModel("ring", (GraphParam("nodes", int, 1, None, "number of nodes N"),), _ring, "a ring")


class Centre(RandomStrategy):
    """Proposes the centre of the space, then random points."""

    def _ask(self, n, next_trial_id, history, pending):
        import numpy as np

        u = super()._ask(n, next_trial_id, history, pending)
        if next_trial_id == 0:
            u[0] = np.full(self.problem.space.dim, 0.5)
        return u
'''


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """A real installed distribution on sys.path, with one entry point in each group."""
    install_plugin(tmp_path, monkeypatch, "nago_plug_kit", PLUGIN,
                   "[nago_spec.datasets]\neights = nago_plug_kit:eights\n"
                   "[nago_spec.graph_models]\nring = nago_plug_kit:ring\n"
                   "[nago_spec.strategies]\ncentre = nago_plug_kit:Centre\nbroken = nago_plug_kit_missing:Thing\n",
                   (DATASETS, STRATEGIES, GRAPH_MODELS))
    yield tmp_path
    sys.modules.pop("nago_plug_kit", None)


def _plugged(text: str) -> str:
    return (text.replace('dataset = "digits"', 'dataset = "eights"')
                .replace('[space.mid]\nnodes = [1, 2]\np = 0.5', '[space.mid]\ngraph = "ring"\nnodes = [1, 2]')
                .replace('strategy = "bo"', 'strategy = "centre"')
                .replace('backend = "local"', 'backend = "process"\nworkers = 2'))


def test_entry_point_plugins_work_in_a_spec_and_in_spawned_workers(plugins, tmp_path):
    path = tmp_path / "plugged.toml"
    path.write_text(_plugged(TINY_SPEC))
    spec = load_spec(path)
    assert (spec.data.dataset, spec.space.mid.graph, spec.search.strategy) == ("eights", "ring", "centre")
    out = run(spec.with_overrides({"export": {"onnx": False}}), RunOptions(out=tmp_path / "run", mode="quiet"))
    with Store(out / "study.db") as store:
        trials = store.trials()
    assert len(trials) == 4 and all(t.state is TrialState.COMPLETE for t in trials), [t.error for t in trials]
    assert trials[0].params["top.p"] == pytest.approx(0.5)  # the plug-in strategy's centre point


def test_a_plugin_that_fails_to_load_is_named_in_the_spec_error(plugins, tmp_path):
    with pytest.raises(SpecError) as err:
        load_spec(text=TINY_SPEC.replace('strategy = "bo"', 'strategy = "broken"'))
    assert len(err.value.lines) == 1
    assert ('[search].strategy = "broken": strategy plug-in \'broken\' (nago_plug_kit_missing:Thing, distribution '
            "nago-plug-kit) failed to load: ModuleNotFoundError") in err.value.lines[0]


def test_a_dataset_registered_from_python_works_in_process(tmp_path, monkeypatch):
    monkeypatch.setattr(DATASETS, "_items", dict(DATASETS._items))
    DATASETS.register("notebook-digits", lambda path: DATASETS.get("digits")(path))
    spec = Spec.from_dict({**load_spec(text=TINY_SPEC).to_dict(), "data": {"dataset": "notebook-digits"}})
    out = run(spec.with_overrides({"search": {"budget": 2}, "export": {"onnx": False}}), RunOptions(out=tmp_path / "run", mode="quiet"))
    with Store(out / "study.db") as store:
        assert [t.state for t in store.trials()] == [TrialState.COMPLETE] * 2
    with pytest.raises(SpecError, match=r"unknown dataset \(did you mean 'notebook-digits'\?\)"):
        Spec.from_dict({**spec.to_dict(), "data": {"dataset": "notebook-digit"}})
