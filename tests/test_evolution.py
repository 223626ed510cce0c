"""Tests of the evolution strategy: NSGA-II with DEAP's operators on ZDT1, mixed spaces, constraints, determinism."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import numpy as np
import pytest

from nago_spec.pareto import hypervolume, to_minimization
from nago_spec.problem import ConstraintInfo, ObjectiveInfo, Problem
from nago_spec.space import CategoricalParam, FloatParam, IntParam, SearchSpace
from nago_spec.strategies import STRATEGIES, EvolutionStrategy, RandomStrategy, Strategy
from nago_spec.strategies.base import STREAM_SOBOL
from nago_spec.strategies.evolution import constraint_encoded

log = logging.getLogger(__name__)


# -- toy problems (as in test_strategies.py, but every objective evaluated: evolution models nothing) ---------
def zdt1_problem(d: int = 6) -> tuple[Problem, Callable[[dict], dict[str, float]]]:
    """ZDT1 in ``d`` dims, both objectives from one plain function."""
    space = SearchSpace(tuple(FloatParam(f"x{i}", 0.0, 1.0) for i in range(d)))

    def evaluate(p: dict) -> dict[str, float]:
        x = np.array([p[f"x{i}"] for i in range(d)])
        g = 1.0 + 9.0 * x[1:].mean()
        return {"f1": float(x[0]), "f2": float(g * (1.0 - np.sqrt(x[0] / g)))}

    objs = (ObjectiveInfo("f1", "minimize", False), ObjectiveInfo("f2", "minimize", False))
    return Problem(space, objs), evaluate


def mixed_problem(constraints: tuple[ConstraintInfo, ...] = ()) -> tuple[Problem, Callable[[dict], dict[str, float]]]:
    """A float, a log float, an int and a categorical; 'size' grows with depth and width."""
    space = SearchSpace((
        FloatParam("x", -1.0, 1.0),
        FloatParam("lr", 1e-4, 1e-1, log=True),
        IntParam("depth", 1, 8),
        CategoricalParam("act", ("relu", "gelu", "tanh")),
    ))
    bonus = {"relu": 0.0, "gelu": -0.3, "tanh": 0.4}

    def evaluate(p: dict) -> dict[str, float]:
        assert isinstance(p["depth"], int) and 1 <= p["depth"] <= 8 and p["act"] in bonus
        assert -1.0 <= p["x"] <= 1.0 and 1e-4 <= p["lr"] <= 1e-1
        loss = (p["x"] - 0.3) ** 2 + (np.log10(p["lr"]) + 2.0) ** 2 + 1.0 / p["depth"] + bonus[p["act"]]
        return {"loss": float(loss), "size": float(p["depth"] * (1.0 + abs(p["x"])))}

    objs = (ObjectiveInfo("loss", "minimize", False), ObjectiveInfo("size", "minimize", False))
    return Problem(space, objs, constraints), evaluate


def run_search(strategy: Strategy, evaluate: Callable, budget: int, batch: int) -> list[dict[str, float]]:
    values = []
    tid = 0
    while tid < budget:
        for p in strategy.ask(min(batch, budget - tid), next_trial_id=tid):
            v = evaluate(p)
            strategy.tell(tid, p, v)
            values.append(v)
            tid += 1
    return values


def random_history(problem: Problem, evaluate: Callable, n: int, failed: tuple[int, ...] = ()) -> list[tuple]:
    rng = np.random.default_rng(0)
    out = []
    for tid in range(n):
        p = problem.space.from_unit(rng.random(problem.space.dim))
        out.append((tid, p, None if tid in failed else evaluate(p)))
    return out


def key(p: dict) -> tuple:
    return tuple(p.values())


# -- registry and options ----------------------------------------------------------------------
def test_registered_as_evolution_with_checked_options():
    problem, _ = zdt1_problem()
    assert STRATEGIES.get("evolution") is EvolutionStrategy
    s = EvolutionStrategy(problem, seed=0)
    assert s.options == {"pop_size": 20, "crossover_prob": 0.9, "eta_crossover": 15.0, "eta_mutation": 20.0,
                         "mutation_prob": None}
    with pytest.raises(ValueError, match="'popsize' \\(did you mean 'pop_size'\\?\\)"):
        EvolutionStrategy(problem, seed=0, options={"popsize": 10})
    with pytest.raises(ValueError, match="`pop_size` must be an integer >= 2, but got 1; "
                                         "`mutation_prob` must be a number in \\[0, 1\\], but got -0.1"):
        EvolutionStrategy(problem, seed=0, options={"pop_size": 1, "mutation_prob": -0.1})


# -- the design, then offspring ------------------------------------------------------------------
def test_initial_trials_take_the_sobol_design_like_bo():
    problem, evaluate = zdt1_problem(3)
    s = EvolutionStrategy(problem, seed=1, initial=6)
    sobol = problem.space.from_unit_many(problem.space.sobol(8, s.child_seed(STREAM_SOBOL)))
    assert s.ask(3, next_trial_id=0) == sobol[:3]
    assert s.ask(3, next_trial_id=3) == sobol[3:6]
    # past `initial` with fewer than 2 complete trials there are no parents: the design goes on
    s.tell(0, sobol[0], evaluate(sobol[0]))
    s.tell(1, sobol[1], None)
    assert s.ask(2, next_trial_id=6) == sobol[6:8]
    s.tell(2, sobol[2], evaluate(sobol[2]))
    assert s.ask(2, next_trial_id=6) != sobol[6:8]  # now two parents: offspring


def test_beats_its_design_and_random_search_on_zdt1():
    problem, evaluate = zdt1_problem(6)
    # the ZDT1 box f1 in [0, 1.1], f2 in [0, 11], normalised: with 100 evaluations in 6 dims hardly any point
    # reaches f2 < 1.1, so a (1.1, 1.1) reference gives 0 to random search and to most NSGA-II runs alike
    ref = np.array([1.1, 11.0])

    def hv(values: list[dict[str, float]]) -> float:
        return hypervolume(to_minimization(values, problem.objectives), ref) / ref.prod()

    result: dict[str, list[float]] = {"evolution": [], "design": [], "random": []}
    start = time.perf_counter()
    for seed in range(3):
        evo = run_search(EvolutionStrategy(problem, seed=seed, initial=20, batch=4), evaluate, 100, 4)
        result["evolution"].append(hv(evo))
        result["design"].append(hv(evo[:20]))
        result["random"].append(hv(run_search(RandomStrategy(problem, seed=seed), evaluate, 100, 4)))
    elapsed = time.perf_counter() - start
    log.info("ZDT1 normalised hv %s in %.1fs", result, elapsed)
    assert np.mean(result["evolution"]) > np.mean(result["design"]) + 0.08
    assert np.mean(result["evolution"]) > np.mean(result["random"]) + 0.03
    assert min(result["evolution"]) > max(result["design"])
    assert elapsed < 10.0


# -- mixed spaces and constraints ----------------------------------------------------------------
def test_mixed_space_gives_valid_distinct_points_and_improves():
    problem, evaluate = mixed_problem()  # evaluate asserts every value is valid
    s = EvolutionStrategy(problem, seed=3, initial=10, batch=3)
    values = run_search(s, evaluate, budget=60, batch=3)
    params = [t.params for t in s.history]
    assert len({key(p) for p in params}) == len(params)  # never the same point twice
    assert {p["act"] for p in params[10:]} >= {"gelu"}
    assert all(type(p["depth"]) is int and type(p["x"]) is float for p in params)
    assert min(v["loss"] for v in values[10:]) < min(v["loss"] for v in values[:10])


def test_feasible_offspring_are_preferred():
    cons = (ConstraintInfo("size", max=3.0),)
    problem, evaluate = mixed_problem(cons)
    frac = {}
    for name in ("evolution", "random"):
        feasible = []
        for seed in range(3):
            s = STRATEGIES.get(name)(problem, seed=seed, initial=10, batch=2)
            values = run_search(s, evaluate, budget=50, batch=2)
            feasible += [problem.violation(v) <= 0 for v in values[10:]]
        frac[name] = float(np.mean(feasible))
    log.info("feasible fraction after the design %s", frac)
    assert frac["evolution"] > frac["random"] + 0.2


def test_constraint_encoding_is_constraint_domination():
    F = np.array([[1.0, 5.0], [2.0, 1.0], [-1e9, -1e9], [0.0, 0.0], [3.0, 3.0]])
    viol = np.array([0.0, 0.0, 2.0, 0.5, 0.0])
    E = constraint_encoded(F, viol)
    assert np.array_equal(E[viol == 0], F[viol == 0])

    def dominates(a: np.ndarray, b: np.ndarray) -> bool:
        return bool(np.all(a <= b) and np.any(a < b))

    for i in np.flatnonzero(viol == 0):
        assert all(dominates(E[i], E[j]) for j in (2, 3))  # feasible beats infeasible, however good its values
    assert dominates(E[3], E[2])  # of two infeasible rows the less violating wins
    assert np.array_equal(constraint_encoded(F[:2], viol[:2]), F[:2])


def test_parents_are_the_feasible_front_first():
    problem, evaluate = mixed_problem((ConstraintInfo("size", max=3.0),))
    s = EvolutionStrategy(problem, seed=0, initial=4, options={"pop_size": 4})
    trials = random_history(problem, evaluate, 30)
    for t in trials:
        s.tell(*t)
    parents = s.parents([t for t in s.history if t.values is not None])
    assert len(parents) == 4
    feasible = sum(problem.violation(v) <= 0 for _, _, v in trials)
    assert feasible >= 4  # the check below needs a choice
    chosen = [problem.space.from_unit(np.array(ind)) for ind in parents]
    assert all(problem.violation(evaluate(p)) <= 0 for p in chosen)


# -- determinism, pending, failures, batches ------------------------------------------------------
def test_deterministic_in_the_told_set_and_seeded():
    problem, evaluate = mixed_problem()
    trials = random_history(problem, evaluate, 16, failed=(3, 9))
    pending = [(16, problem.space.from_unit(np.full(4, 0.3))), (17, problem.space.from_unit(np.full(4, 0.7)))]
    asks = []
    shuffled = [5, 11, 0, 15, 3, 7, 1, 9, 13, 2, 10, 4, 14, 8, 6, 12]
    for order, pend in ((range(16), pending), (shuffled, pending[::-1])):
        s = EvolutionStrategy(problem, seed=5, initial=8)
        for i in order:
            s.tell(*trials[i])
        asks.append(s.ask(4, next_trial_id=18, pending=pend))
    assert asks[0] == asks[1]
    other = EvolutionStrategy(problem, seed=6, initial=8)
    for t in trials:
        other.tell(*t)
    assert other.ask(4, next_trial_id=18, pending=pending) != asks[0]
    # one point of an ask is the same as asking for it alone with the earlier ones pending
    alone = EvolutionStrategy(problem, seed=5, initial=8)
    for t in trials:
        alone.tell(*t)
    assert alone.ask(1, next_trial_id=19, pending=pending + [(18, asks[0][0])]) == asks[0][1:2]


def test_global_random_state_is_left_untouched():
    problem, evaluate = zdt1_problem(4)
    s = EvolutionStrategy(problem, seed=0, initial=4)
    for t in random_history(problem, evaluate, 10):
        s.tell(*t)
    random.seed(1234)
    state = random.getstate()
    first = s.ask(3, next_trial_id=10)
    assert random.getstate() == state
    random.seed(99)  # a different global state does not change the proposals
    assert s.ask(3, next_trial_id=10) == first


def test_pending_and_told_points_are_not_proposed_again():
    # a tiny integer grid (4 x 4 = 16 points): duplicates would be likely without the check
    space = SearchSpace((IntParam("a", 0, 3), IntParam("b", 0, 3)))
    problem = Problem(space, (ObjectiveInfo("f", "minimize", False), ObjectiveInfo("g", "minimize", False)))

    def evaluate(p: dict) -> dict[str, float]:
        return {"f": float(p["a"] + p["b"]), "g": float((3 - p["a"]) + abs(p["b"] - 1))}

    s = EvolutionStrategy(problem, seed=0, initial=4, options={"pop_size": 4})
    told = [{"a": 0, "b": 0}, {"a": 3, "b": 3}, {"a": 1, "b": 2}, {"a": 2, "b": 1}]
    for tid, p in enumerate(told):
        s.tell(tid, p, evaluate(p))
    pending = [(4, {"a": 0, "b": 1}), (5, {"a": 1, "b": 1}), (6, {"a": 1, "b": 0})]
    ps = s.ask(6, next_trial_id=7, pending=pending)
    keys = [key(p) for p in ps]
    assert len(set(keys)) == 6
    assert not set(keys) & ({key(p) for p in told} | {key(p) for _, p in pending})
    assert all(0 <= p["a"] <= 3 and 0 <= p["b"] <= 3 for p in ps)


def test_failed_trials_are_never_parents_and_never_proposed_again():
    space = SearchSpace((IntParam("a", 0, 3), IntParam("b", 0, 3)))
    problem = Problem(space, (ObjectiveInfo("dist", "minimize", False), ObjectiveInfo("sum", "minimize", False)))
    s = EvolutionStrategy(problem, seed=0, initial=2, options={"pop_size": 4})
    s.tell(0, {"a": 0, "b": 0}, {"dist": 5.0, "sum": 0.0})
    s.tell(1, {"a": 3, "b": 3}, {"dist": 5.0, "sum": 6.0})
    s.tell(2, {"a": 1, "b": 2}, None)
    s.tell(3, {"a": 3, "b": 0}, {"dist": 4.0})  # lacks an objective: no parent either
    parents = s.parents([t for t in s.history if t.values is not None and "sum" in t.values])
    assert sorted(key(space.from_unit(np.array(p))) for p in parents) == [(0, 0), (3, 3)]
    ps = s.ask(8, next_trial_id=4)
    assert not {(1, 2), (3, 0), (0, 0), (3, 3)} & {key(p) for p in ps}
    assert len({key(p) for p in ps}) == 8


def test_only_failed_trials_fall_back_to_the_design():
    problem, evaluate = zdt1_problem(3)
    s = EvolutionStrategy(problem, seed=0, initial=2)
    for t in random_history(problem, evaluate, 6, failed=tuple(range(6))):
        s.tell(*t)
    sobol = problem.space.from_unit_many(problem.space.sobol(3, s.child_seed(STREAM_SOBOL), skip=6))
    assert s.ask(3, next_trial_id=6) == sobol


def test_an_exhausted_space_still_answers(caplog):
    space = SearchSpace((CategoricalParam("c", ("a", "b")),))
    problem = Problem(space, (ObjectiveInfo("f", "minimize", False),))
    s = EvolutionStrategy(problem, seed=0, initial=0)
    s.tell(0, {"c": "a"}, {"f": 1.0})
    s.tell(1, {"c": "b"}, {"f": 2.0})
    with caplog.at_level(logging.WARNING, logger="nago_spec.strategies.evolution"):
        assert s.ask(1, next_trial_id=2)[0]["c"] in ("a", "b")
    assert "no new point" in caplog.text
