"""NSGA-II on true evaluations with DEAP's operators, made asynchronous: one offspring per trial id."""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from deap import base, tools

from nago_spec.pareto import to_minimization
from nago_spec.problem import Problem
from nago_spec.space import CategoricalParam, FloatParam, IntParam
from nago_spec.strategies.base import STREAM_EVOLUTION, STREAM_SOBOL, Strategy, Trial

log = logging.getLogger(__name__)

_REBREED = 8  # offspring bred afresh when one is a told or pending point
_HARD_TRIES = 8  # then that many mutations of every gene at once, each with wide steps
_HARD_ETA = 1.0  # polynomial-mutation index of those (eta near 0: steps nearly uniform over the range)
_RANDOM_TRIES = 64  # then uniform random points
_SAME = 1e-9  # two canonical unit points closer than this in every coordinate are the same point


class _Individual(list):
    """A unit point (d floats) as DEAP's operators take it: a mutable sequence carrying a ``fitness``."""

    def __init__(self, genes: Sequence[float], fitness: base.Fitness):
        super().__init__(float(x) for x in genes)
        self.fitness = fitness


@functools.cache
def _fitness_class(m: int) -> type[base.Fitness]:
    """A DEAP fitness of ``m`` minimised objectives, built here because ``deap.creator`` is global state."""
    return type(f"_MinFitness{m}", (base.Fitness,), {"weights": (-1.0,) * m})


@contextmanager
def _seeded_global_random(seed: int) -> Iterator[None]:
    """Seed Python's global ``random`` (DEAP's operators draw from it) and restore its state on exit.

    The global state is borrowed, so this is not safe while other threads draw from ``random``.
    """
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def constraint_encoded(F: np.ndarray, violation: np.ndarray) -> np.ndarray:
    """Objectives (n x m, minimisation) under which Pareto dominance is Deb's constraint-domination.

    Feasible rows (``violation`` (n) <= 0) keep their values; an infeasible row becomes
    ``worst + lift * r`` in every objective, with ``worst`` the column maxima, ``lift = |worst| + 1`` and
    ``r`` (1, 2, ...) the rank of its violation among the infeasible rows. So every feasible row
    dominates every infeasible one, and of two infeasible rows the less violating one dominates, at any
    scale of the objectives.
    """
    F = np.asarray(F, dtype=float)
    violation = np.asarray(violation, dtype=float).reshape(-1)
    infeasible = violation > 0
    if not infeasible.any():
        return F
    worst = F.max(axis=0)
    rank = np.unique(violation[infeasible], return_inverse=True)[1] + 1.0
    out = F.copy()
    out[infeasible] = worst + (np.abs(worst) + 1.0) * rank[:, None]
    return out


class EvolutionStrategy(Strategy):
    """NSGA-II (Deb et al. 2002) on true evaluations, asynchronous and steady-state.

    Trials ``0 .. initial-1`` (and any trial while fewer than 2 trials are complete) take the scrambled
    Sobol design, as ``bo`` does. Every later trial id gets one offspring of the parent population:
    ``tools.selNSGA2`` over all complete trials (failed and pending trials are never parents) with
    Deb's constraint-domination (``constraint_encoded``), at most ``pop_size`` of them. So generations
    are implicit: each told trial competes for a place among the parents at the next ask.

    Breeding, in the unit cube, with DEAP's operators seeded per trial id:

    - parents: two winners of ``tools.selTournamentDCD`` (dominance, then crowding distance); a
      population of fewer than 4 is repeated up to 4, the least the tournament takes;
    - crossover, with probability ``crossover_prob``: ``tools.cxSimulatedBinaryBounded`` (SBX, index
      ``eta_crossover``) over floats and ints, ``tools.cxUniform`` over categoricals (an SBX child of two
      categories would be a third one, by an order the categories do not have); one child is kept;
    - mutation, each gene with probability ``mutation_prob``: ``tools.mutPolynomialBounded`` (index
      ``eta_mutation``) for floats; ``tools.mutUniformInt`` over [low, high] for ints, since a polynomial
      step snapped to the nearest integer mostly leaves a small range (nodes 3..10) unchanged, while
      SBX already moves ints locally (on the log scale for log ints); a categorical takes one of its
      other choices, uniformly.

    The child is snapped (``from_unit`` then ``to_unit``), so ints and categoricals are exact. One equal
    to a told (complete or failed), pending or earlier point of the same ask is bred again up to 8 times,
    then mutated in every gene with wide steps up to 8 times, then replaced by a random new point.

    Proposals are a pure function of (seed, told set, pending, trial id); Python's global ``random``,
    which DEAP draws from, is seeded per trial and restored afterwards.

    Options: ``pop_size`` (20, parents kept; an int >= 2), ``crossover_prob`` (0.9), ``eta_crossover``
    (15, larger: children nearer their parents), ``eta_mutation`` (20, likewise for mutation steps),
    ``mutation_prob`` (per gene; None: 1/d for d parameters).
    """

    default_options = {
        "pop_size": 20,
        "crossover_prob": 0.9,
        "eta_crossover": 15.0,
        "eta_mutation": 20.0,
        "mutation_prob": None,
    }

    def __init__(
        self,
        problem: Problem,
        *,
        seed: int,
        initial: int = 8,
        batch: int = 2,
        options: Mapping[str, Any] | None = None,
    ):
        super().__init__(problem, seed=seed, initial=initial, batch=batch, options=options)
        _check_options(self.options)
        space = problem.space
        self._floats = [j for j, p in enumerate(space.params) if isinstance(p, FloatParam)]
        self._ints = [j for j, p in enumerate(space.params) if isinstance(p, IntParam)]
        self._cats = [j for j, p in enumerate(space.params) if isinstance(p, CategoricalParam)]
        self._numeric = sorted(self._floats + self._ints)
        prob = self.options["mutation_prob"]
        self._mutation_prob = 1.0 / space.dim if prob is None else float(prob)

    # -- the hook ------------------------------------------------------------------------------
    def _ask(self, n: int, next_trial_id: int, history: list[Trial], pending: list[Trial]) -> np.ndarray:
        space = self.problem.space
        names = self.problem.names
        complete = [t for t in history if t.values is not None and all(nm in t.values for nm in names)]
        taken = [t.u for t in history] + [t.u for t in pending]
        parents: list[_Individual] | None = None
        U = np.zeros((n, space.dim))
        for k in range(n):
            tid = next_trial_id + k
            if self.in_design(tid, len(complete)):
                U[k] = space.sobol(1, self.child_seed(STREAM_SOBOL), skip=tid)[0]
            else:
                if parents is None:
                    parents = self.parents(complete)
                U[k] = self._offspring(tid, parents, np.array(taken))
            taken.append(self._canonical(U[k]))  # later points of this ask must differ from it, as from pending
        return U

    # -- selection -----------------------------------------------------------------------------
    def parents(self, complete: list[Trial]) -> list[_Individual]:
        """The parent population: NSGA-II's survivors among ``complete`` trials (sorted by id), at most
        ``pop_size``, best front first, each with its ``fitness.crowding_dist``."""
        F = to_minimization([t.values for t in complete], self.problem.objectives)
        violation = np.array([self.problem.violation(t.values) for t in complete])
        fitness = _fitness_class(F.shape[1])
        pop = [
            _Individual(t.u, fitness(tuple(float(x) for x in row)))
            for t, row in zip(complete, constraint_encoded(F, violation))
        ]
        return tools.selNSGA2(pop, min(int(self.options["pop_size"]), len(pop)))

    # -- variation -----------------------------------------------------------------------------
    def _offspring(self, trial_id: int, parents: list[_Individual], taken: np.ndarray) -> np.ndarray:
        """A canonical unit point (d,) for ``trial_id`` bred from ``parents``, unlike every row of ``taken``
        (r x d, canonical) unless the search space has no such point left."""
        d = self.problem.space.dim
        rng = self.trial_rng(trial_id, STREAM_EVOLUTION)
        with _seeded_global_random(int(rng.integers(2**63))):
            for _ in range(_REBREED):
                child = self._breed(parents, rng)
                u = self._canonical(child)
                if _is_new(u, taken):
                    return u
            for _ in range(_HARD_TRIES):
                self._mutate(child, rng, prob=1.0, eta=_HARD_ETA)
                u = self._canonical(child)
                if _is_new(u, taken):
                    return u
        for _ in range(_RANDOM_TRIES):
            u = self._canonical(rng.random(d))
            if _is_new(u, taken):
                return u
        self.fallbacks[trial_id] = "no new point found: it repeats one already told or pending"
        log.warning("trial %d: %s", trial_id, self.fallbacks[trial_id])
        return u

    def _breed(self, parents: list[_Individual], rng: np.random.Generator) -> list[float]:
        """One child genome (d floats in [0, 1]) of two tournament winners; draws from the global ``random``."""
        pool = parents if len(parents) >= 4 else (parents * 4)[:4]
        p1, p2 = tools.selTournamentDCD(pool, 4)[:2]
        c1, c2 = list(p1), list(p2)
        if rng.random() < float(self.options["crossover_prob"]):
            self._crossover(c1, c2)
        child = c1 if rng.random() < 0.5 else c2
        self._mutate(child, rng, prob=self._mutation_prob, eta=float(self.options["eta_mutation"]))
        return child

    def _crossover(self, c1: list[float], c2: list[float]) -> None:
        """SBX over the numeric genes and uniform crossover over the categorical ones, in place."""
        for idx, op in (
            (self._numeric, lambda a, b: tools.cxSimulatedBinaryBounded(
                a, b, float(self.options["eta_crossover"]), 0.0, 1.0)),
            (self._cats, lambda a, b: tools.cxUniform(a, b, 0.5)),
        ):
            if idx:
                a, b = [c1[j] for j in idx], [c2[j] for j in idx]
                op(a, b)
                for j, x, y in zip(idx, a, b):
                    c1[j], c2[j] = x, y

    def _mutate(self, child: list[float], rng: np.random.Generator, *, prob: float, eta: float) -> None:
        """Mutate each gene of ``child`` (d floats in [0, 1]) with probability ``prob``, in place."""
        params = self.problem.space.params
        if self._floats:
            genes = [child[j] for j in self._floats]
            tools.mutPolynomialBounded(genes, eta, 0.0, 1.0, prob)
            for j, x in zip(self._floats, genes):
                child[j] = x
        if self._ints:
            ints = [params[j] for j in self._ints]
            values = [p.from_unit(child[j]) for p, j in zip(ints, self._ints)]
            tools.mutUniformInt(values, [p.low for p in ints], [p.high for p in ints], prob)
            for p, j, v in zip(ints, self._ints, values):
                child[j] = p.to_unit(v)
        for j in self._cats:
            p = params[j]
            k = len(p.choices)
            if k > 1 and rng.random() < prob:
                other = int(rng.integers(k - 1))
                current = p.index(p.from_unit(child[j]))
                child[j] = p.to_unit(p.choices[other + (other >= current)])

    def _canonical(self, u: Sequence[float]) -> np.ndarray:
        """The unit point (d,) of the parameters ``u`` decodes to: ints and categoricals exactly on their values."""
        space = self.problem.space
        return space.to_unit(space.from_unit(np.asarray(u, dtype=float)))


def _is_new(u: np.ndarray, taken: np.ndarray) -> bool:
    """Whether unit point ``u`` (d,) differs from every row of ``taken`` (r x d)."""
    return len(taken) == 0 or bool(np.abs(taken - u).max(axis=1).min() > _SAME)


def _check_options(options: Mapping[str, Any]) -> None:
    """Raise ValueError naming every option outside its range."""
    problems = []
    pop = options["pop_size"]
    if isinstance(pop, bool) or not isinstance(pop, int) or pop < 2:
        problems.append(f"`pop_size` must be an integer >= 2, but got {pop!r}")
    for name, low, high in (("crossover_prob", 0.0, 1.0), ("eta_crossover", 0.0, None), ("eta_mutation", 0.0, None),
                            ("mutation_prob", 0.0, 1.0)):
        v = options[name]
        if v is None and name == "mutation_prob":
            continue
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v and (high is None or v <= high)
        if not ok:
            bounds = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
            problems.append(f"`{name}` must be a number {bounds}, but got {v!r}")
    if problems:
        raise ValueError("invalid EvolutionStrategy options: " + "; ".join(problems))
