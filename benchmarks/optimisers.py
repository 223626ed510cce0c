"""Multi-objective optimisers on black-box problems: our strategies against Optuna, BoTorch and pymoo.

Problems (params-mode specs in benchmarks/specs/, objectives in benchmarks/problems.py, all minimised;
the reference point of the scoring hypervolume in brackets):

- ``zdt1``, ``zdt2``, ``zdt3``: 6 variables, 100 evaluations (1.1, 1.1); ZDT3's front is disconnected;
- ``zdt1_noisy``: ZDT1 with Gaussian noise of sd 0.05 on both objectives, 100 evaluations, scored on
  the noise-free values of the evaluated points (1.1, 1.1);
- ``kursawe``: 3 variables in [-5, 5], disconnected front, 100 evaluations (-14, 1.2);
- ``dtlz2``: 3 objectives, 6 variables, 100 evaluations (1.1, 1.1, 1.1);
- ``dtlz7``: 3 objectives, 6 variables, four disconnected regions, 100 evaluations (1.1, 1.1, 6.6);
- ``c2dtlz2``: C2-DTLZ2, 2 objectives, 6 variables and one black-box constraint (c <= 0), 100
  evaluations (1.1, 1.1); only feasible points count;
- ``nasbench_macro``: NAS-Bench-Macro on CIFAR-10, 8 categorical layers (3 choices), ``error`` and the
  cheap ``params`` (/ the largest), 50 evaluations (1.1, 1.1);
- ``nb201``: NAS-Bench-201 on CIFAR-10 with 8-bit post-training quantisation (AnalogNAS-Bench), 6
  categorical edges (5 operations), ``error``, ``int8_error`` and the cheap ``params``, 50
  evaluations (0.15, 0.15, 0.8).

The two NAS problems read tables from ../shared/data beside the repository and are skipped, with
the reason printed, where they are absent. Cheap objectives (``cheap = true``) are computed exactly
by our strategies; the references model them like the others.

Methods, each at batch 1 and 4 (``--batches``): a batch of q points is proposed with the q - 1 others
pending, evaluated, and only then told, as ``nago run`` does with q workers:

- ``bo``, ``evolution``, ``random`` (ours), through the spec: ``load_spec``, ``Evaluator(spec).problem(None)``,
  the strategy from ``STRATEGIES``, then an ask(q) / evaluate / tell loop. That loop is ``nago run``
  with the local backend less the SQLite store, the progress display and the report.
- ``bo_ref``: ``bo`` given the scoring reference point as each objective's ``ref``, the information
  qLogNEHVI gets; ``bo`` infers its own. The difference is what the inference costs.
- ``optuna``: Optuna's ``GPSampler`` with its defaults (``n_startup_trials = initial``, seeded;
  constraints through ``constraints_func``) by ask/tell; a batch is q ``ask`` calls before any
  ``tell``, so the later ones see the earlier as running trials (its qLogEHVI / Kriging believer).
- ``tpe``: Optuna's ``TPESampler`` with its defaults, seeded, ``constraints_func`` as above.
- ``botorch``: BoTorch's qLogNEHVI in the loop of its multi-objective tutorial: a ``ModelListGP`` of
  one ``SingleTaskGP`` per objective and constraint (``Standardize``, ``Normalize`` to the unit cube),
  ``fit_gpytorch_mll``, ``qLogNoisyExpectedHypervolumeImprovement`` at the benchmark's reference point
  (BoTorch needs one given), 128 Sobol MC samples, ``prune_baseline=True``, constraints as outcome
  constraints; ``optimize_acqf`` with q, num_restarts=10, raw_samples=512, sequential greedy.
  A categorical coordinate is rounded to its bin before it is evaluated and enters the data.
- ``nsga2``: pymoo's NSGA-II, population = ``initial``, on the unit cube, constraints as pymoo's.

Every method but ``random`` and ``tpe``'s own start-up starts from the same ``initial`` (10) points,
the scrambled Sobol design our ``bo`` draws for the seed. The seed drives that design and each
method's own randomness. Wall time covers the whole loop (fits, proposals, evaluations). Every run
uses one torch thread (``--threads``), the house rule for a worker; ``--jobs 2`` runs two runs at a
time in two processes, so every method shares the machine the same way.

Each table shows, per method: the hypervolume of the feasible evaluated points (mean ± std over
seeds), as a fraction of the true front's, mean wall seconds, and the ratios to the best reference
(the reference of highest mean hypervolume among GPSampler, qLogNEHVI, TPE, NSGA-II and random) and
to qLogNEHVI's and GPSampler's wall time. A summary checks issue 18's targets for ``bo``.

    python benchmarks/optimisers.py [--quick] [--problems ...] [--methods ...] [--seeds 5]
        [--batches 1,4] [--evals N] [--initial 10] [--jobs 2] [--batch4-at 200] [--json out.json]
        [--runs runs.jsonl] [--bo-option KEY=VALUE ...]

``--quick`` runs one seed at 30 % of each budget (at least 12 evaluations), for development.
It also times, for ``bo`` only, one ask(4) after telling ``--batch4-at`` (200) Sobol points of ZDT1,
after an untimed warm-up ask (the first ask in a process pays one-time set-up). ``--bo-option``
sets one of bo's options in every run of ``bo`` and ``bo_ref`` (``--bo-option scalarise_every=0``),
to measure an option's effect; a ``--runs`` file keeps those runs apart from the default's.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import statistics
import sys
import time
import tomllib
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from nago_spec.callables import load_callable
from nago_spec.errors import TrialError
from nago_spec.pareto import hypervolume, to_minimization
from nago_spec.pipeline import Evaluator
from nago_spec.problem import Problem
from nago_spec.space import CategoricalParam, IntParam
from nago_spec.spec import Spec, load_spec
from nago_spec.strategies.base import STREAM_SOBOL
from nago_spec.strategies.random import RandomStrategy

HERE = Path(__file__).resolve().parent
SPECS = HERE / "specs"

OURS = ("bo", "bo_ref", "evolution", "random")
REFERENCES = ("optuna", "botorch", "tpe", "nsga2")
METHODS = OURS + REFERENCES
#: the methods a target compares bo with: the references and random search
RIVALS = REFERENCES + ("random",)
LABELS = {
    "bo": "bo (ours)",
    "bo_ref": "bo given the scoring ref (ours)",
    "evolution": "evolution (ours)",
    "random": "random (ours)",
    "nsga2": "NSGA-II (pymoo)",
    "optuna": "GPSampler (Optuna)",
    "botorch": "qLogNEHVI (BoTorch)",
    "tpe": "TPE (Optuna)",
}
#: the modules each reference needs, imported before any timing; one that fails to import skips the reference
REFERENCE_IMPORTS = {
    "nsga2": ("pymoo.algorithms.moo.nsga2",),
    "optuna": ("optuna",),
    "tpe": ("optuna",),
    "botorch": ("botorch.acquisition.multi_objective.logei", "botorch.fit", "botorch.optim", "gpytorch"),
}
INSTALL_HINT = "skipped: pip install -c constraints.txt '.[bench]'"


@dataclass(frozen=True)
class BenchProblem:
    """A benchmark problem: its spec, hypervolume reference point (minimisation) and a description.

    ``truth`` names the function of benchmarks/problems.py giving the noise-free values the evaluated
    points are scored on (None: the observed values); ``table`` the function giving the path of a
    data table the problem needs.
    """

    name: str
    spec: Path
    ref: tuple[float, ...]
    title: str
    truth: str | None = None
    table: str | None = None


PROBLEMS = {
    p.name: p for p in (
        BenchProblem("zdt1", SPECS / "zdt1.toml", (1.1, 1.1), "ZDT1, 6 variables"),
        BenchProblem("zdt2", SPECS / "zdt2.toml", (1.1, 1.1), "ZDT2, 6 variables"),
        BenchProblem("zdt3", SPECS / "zdt3.toml", (1.1, 1.1), "ZDT3, 6 variables, disconnected front"),
        BenchProblem("zdt1_noisy", SPECS / "zdt1_noisy.toml", (1.1, 1.1),
                     "ZDT1 with noise of sd 0.05, scored noise-free", truth="zdt1"),
        BenchProblem("kursawe", SPECS / "kursawe.toml", (-14.0, 1.2), "Kursawe, 3 variables, disconnected front"),
        BenchProblem("dtlz2", SPECS / "dtlz2.toml", (1.1, 1.1, 1.1), "DTLZ2, 3 objectives, 6 variables"),
        BenchProblem("dtlz7", SPECS / "dtlz7.toml", (1.1, 1.1, 6.6),
                     "DTLZ7, 3 objectives, 6 variables, disconnected front"),
        BenchProblem("c2dtlz2", SPECS / "c2dtlz2.toml", (1.1, 1.1),
                     "C2-DTLZ2, 2 objectives, 6 variables, one black-box constraint"),
        BenchProblem("nasbench_macro", SPECS / "nasbench_macro.toml", (1.1, 1.1),
                     "NAS-Bench-Macro CIFAR-10, 8 categorical layers; error and cheap params / max params",
                     table="nasbench_macro_path"),
        BenchProblem("nb201", SPECS / "nb201.toml", (0.15, 0.15, 0.8),
                     "NAS-Bench-201 CIFAR-10 (AnalogNAS-Bench), 6 categorical edges; error, int8 error and "
                     "cheap params / max params", table="nb201_path"),
    )
}


def problems_module() -> ModuleType:
    """benchmarks/problems.py as the specs import it (the same module object, so its table caches are shared)."""
    fn = load_callable("problems.py:zdt1", HERE)
    return sys.modules[fn.__module__]


# --- one run ---------------------------------------------------------------------------------------------


@dataclass
class Task:
    """One problem at one seed and batch size: the spec, its evaluator, the optimiser's Problem and the budget."""

    bench: BenchProblem
    spec: Spec
    evaluator: Evaluator
    problem: Problem
    seed: int
    budget: int
    initial: int
    batch: int = 1

    @classmethod
    def load(cls, bench: BenchProblem, seed: int, budget: int | None, initial: int, batch: int = 1) -> Task:
        spec = load_spec(bench.spec, {"seed": seed})
        evaluator = Evaluator(spec)
        return cls(bench, spec, evaluator, evaluator.problem(None), seed,
                   int(budget if budget is not None else spec.search.budget), initial, batch)

    @property
    def ref(self) -> np.ndarray:
        return np.asarray(self.bench.ref, dtype=float)

    def evaluate(self, params: Mapping[str, Any], trial_id: int) -> dict[str, float] | None:
        """The values of one point (objectives and constrained quantities), or None when the trial fails."""
        try:
            values, _ = self.evaluator.evaluate(params, trial_id, None)
        except TrialError:
            return None
        return values

    def minimised(self, values: Mapping[str, float]) -> np.ndarray:
        """Objective values (m,) in minimisation form, ordered as the problem's objectives."""
        return to_minimization(values, self.problem.objectives)

    def constraint_values(self, values: Mapping[str, float]) -> list[float]:
        """Each constraint in the <= 0-is-feasible form Optuna, BoTorch and pymoo take."""
        out = []
        for c in self.problem.constraints:
            v = float(values[c.objective])
            out.append(max(c.min - v if c.min is not None else -np.inf, v - c.max if c.max is not None else -np.inf))
        return out

    def initial_design(self) -> np.ndarray:
        """The unit points (initial x d) our bo and evolution propose first: the seed's scrambled Sobol design."""
        sobol_seed = RandomStrategy(self.problem, seed=self.seed).child_seed(STREAM_SOBOL)
        return self.problem.space.sobol(self.initial, sobol_seed)


class Recorder:
    """Evaluates points for a method, keeps the scored values (minimisation form) and counts the budget.

    A point is scored on the noise-free values where the problem has them (``truth``) and only when
    it satisfies the constraints.
    """

    def __init__(self, task: Task):
        self.task = task
        self.rows: list[np.ndarray] = []
        self.count = 0
        self.truth = None
        if task.bench.truth is not None:
            self.truth = getattr(problems_module(), task.bench.truth)

    @property
    def left(self) -> int:
        return self.task.budget - self.count

    def __call__(self, params: Mapping[str, Any]) -> dict[str, float] | None:
        values = self.task.evaluate(params, self.count)
        self.count += 1
        if values is not None and self.task.problem.violation(values) <= 0:
            scored = self.truth(params) if self.truth is not None else values
            self.rows.append(self.task.minimised(scored))
        return values

    @property
    def F(self) -> np.ndarray:
        m = len(self.task.problem.objectives)
        return np.array(self.rows, dtype=float).reshape(-1, m)


# --- our strategies ------------------------------------------------------------------------------------


def run_ours(name: str, task: Task, bo_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """An ask(q) / evaluate / tell loop of strategy ``name``, as ``nago run`` does with q workers;
    ``bo_options`` join bo's options (``bo`` and ``bo_ref``)."""
    from nago_spec.strategies import STRATEGIES

    problem = task.problem
    if name == "bo_ref":  # the scoring reference point, in each objective's own direction
        name = "bo"
        problem = dataclasses.replace(problem, objectives=tuple(
            dataclasses.replace(o, ref=r if o.direction == "minimize" else -r)
            for o, r in zip(problem.objectives, task.bench.ref)))
    options = dict(task.spec.search.options) if task.spec.search.strategy == name else {}
    if name == "bo":
        options.update(bo_options or {})
    strategy = STRATEGIES.get(name)(problem, seed=task.seed, initial=task.initial, batch=task.batch,
                                    options=options)
    rec = Recorder(task)
    tid = 0
    while rec.left > 0:
        batch = strategy.ask(min(task.batch, rec.left), next_trial_id=tid)
        results = [rec(params) for params in batch]
        for params, values in zip(batch, results):
            strategy.tell(tid, params, values)
            tid += 1
    return rec.F


# --- references ----------------------------------------------------------------------------------------


def run_nsga2(task: Task) -> np.ndarray:
    """pymoo's NSGA-II on the unit cube, population ``initial``, seeded, first population the Sobol design."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.duplicate import ElementwiseDuplicateElimination
    from pymoo.core.problem import Problem as PymooProblem

    space = task.problem.space
    m, k = len(task.problem.objectives), len(task.problem.constraints)
    rec = Recorder(task)

    def decoded(ind: Any) -> tuple[Any, ...]:
        return tuple(space.from_unit(ind.X).values())

    algorithm = NSGA2(
        pop_size=task.initial,
        sampling=task.initial_design(),
        eliminate_duplicates=ElementwiseDuplicateElimination(cmp_func=lambda a, b: decoded(a) == decoded(b)),
    )
    algorithm.setup(PymooProblem(n_var=space.dim, n_obj=m, n_ieq_constr=k, xl=0.0, xu=1.0), seed=task.seed,
                    verbose=False)
    while rec.left > 0:
        pop = algorithm.ask()
        X = pop.get("X")[: rec.left]
        F, G = np.empty((len(X), m)), np.empty((len(X), k))
        for i, x in enumerate(X):
            values = rec(space.from_unit(x))
            # a failed point: worse than anything, so selection drops it (none of these problems fails)
            F[i] = task.minimised(values) if values is not None else np.full(m, 1e6)
            G[i] = task.constraint_values(values) if values is not None else np.full(k, 1e6)
        if len(X) < len(pop):  # the budget ends inside this generation
            break
        pop.set("F", F)
        if k:
            pop.set("G", G)
        algorithm.tell(infills=pop)
    return rec.F


def optuna_distributions(task: Task) -> dict[str, Any]:
    """The spec's parameters as Optuna distributions."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for p in task.problem.space.params:
        if isinstance(p, CategoricalParam):
            out[p.name] = CategoricalDistribution(list(p.choices))
        elif isinstance(p, IntParam):
            out[p.name] = IntDistribution(p.low, p.high, log=p.log)
        else:
            out[p.name] = FloatDistribution(p.low, p.high, log=p.log)
    return out


def _run_optuna(task: Task, sampler_of: Callable[[Callable[[Any], Sequence[float]] | None], Any]) -> np.ndarray:
    """An Optuna sampler through ask/tell, q asks before the q tells; the Sobol design is enqueued first."""
    import optuna
    from optuna.trial import TrialState

    space = task.problem.space
    objectives = task.problem.objectives
    constraints_func = None
    if task.problem.constraints:
        def constraints_func(trial: Any) -> Sequence[float]:
            return trial.user_attrs["constraints"]
    study = optuna.create_study(directions=[o.direction for o in objectives], sampler=sampler_of(constraints_func))
    for u in task.initial_design():
        study.enqueue_trial(space.from_unit(u))
    dists = optuna_distributions(task)
    rec = Recorder(task)
    while rec.left > 0:
        trials = [study.ask(dists) for _ in range(min(task.batch, rec.left))]
        for trial in trials:
            values = rec(trial.params)
            if values is None:
                study.tell(trial, state=TrialState.FAIL)
                continue
            if constraints_func is not None:
                trial.set_user_attr("constraints", task.constraint_values(values))
            study.tell(trial, [values[o.name] for o in objectives])
    return rec.F


def run_optuna(task: Task) -> np.ndarray:
    """Optuna's GPSampler, defaults but the start-up count (our design's size)."""
    import optuna

    return _run_optuna(task, lambda cf: optuna.samplers.GPSampler(
        seed=task.seed, n_startup_trials=task.initial, constraints_func=cf))


def run_tpe(task: Task) -> np.ndarray:
    """Optuna's TPESampler with its defaults, seeded."""
    import optuna

    return _run_optuna(task, lambda cf: optuna.samplers.TPESampler(seed=task.seed, constraints_func=cf))


def run_botorch(task: Task) -> np.ndarray:
    """BoTorch's qLogNEHVI, the loop of its multi-objective tutorial, on the unit-cube encoding."""
    from botorch.acquisition.multi_objective.logei import (
        qLogNoisyExpectedHypervolumeImprovement,
    )
    from botorch.acquisition.multi_objective.objective import IdentityMCMultiOutputObjective
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import ModelListGP, SingleTaskGP
    from botorch.models.transforms import Normalize, Standardize
    from botorch.optim import optimize_acqf
    from botorch.sampling import SobolQMCNormalSampler
    from gpytorch.mlls import SumMarginalLogLikelihood

    tkwargs: dict[str, Any] = {"dtype": torch.double}
    space = task.problem.space
    d, m, k = space.dim, len(task.problem.objectives), len(task.problem.constraints)
    bounds = torch.stack([torch.zeros(d, **tkwargs), torch.ones(d, **tkwargs)])
    ref_point = torch.as_tensor(-task.ref, **tkwargs)  # BoTorch maximises: negate the minimisation reference
    torch.manual_seed(task.seed)
    rec = Recorder(task)
    X: list[np.ndarray] = []
    Y: list[np.ndarray] = []

    def observe(U: np.ndarray) -> None:
        for u in space.snap(U):  # a categorical coordinate is rounded to its bin's centre
            values = rec(space.from_unit(u))
            if values is not None:
                X.append(u)
                # outcomes: the objectives to maximise, then the constraints (feasible when <= 0)
                Y.append(np.concatenate([-task.minimised(values), task.constraint_values(values)]))

    observe(task.initial_design()[: task.budget])
    while rec.left > 0:
        train_x = torch.as_tensor(np.array(X), **tkwargs)
        train_y = torch.as_tensor(np.array(Y), **tkwargs)
        models = [
            SingleTaskGP(train_x, train_y[:, i : i + 1], outcome_transform=Standardize(m=1),
                         input_transform=Normalize(d=d, bounds=bounds))
            for i in range(m + k)
        ]
        model = ModelListGP(*models)
        fit_gpytorch_mll(SumMarginalLogLikelihood(model.likelihood, model))
        acqf = qLogNoisyExpectedHypervolumeImprovement(
            model=model, ref_point=ref_point, X_baseline=train_x, prune_baseline=True,
            sampler=SobolQMCNormalSampler(sample_shape=torch.Size([128])),
            objective=IdentityMCMultiOutputObjective(outcomes=list(range(m))),
            constraints=[lambda Z, j=j: Z[..., m + j] for j in range(k)] or None,
        )
        candidate, _ = optimize_acqf(
            acqf, bounds=bounds, q=min(task.batch, rec.left), num_restarts=10, raw_samples=512,
            options={"batch_limit": 5, "maxiter": 200}, sequential=True,
        )
        observe(candidate.detach().numpy().reshape(-1, d))
    return rec.F


REFERENCE_RUNNERS: dict[str, Callable[[Task], np.ndarray]] = {
    "nsga2": run_nsga2, "optuna": run_optuna, "tpe": run_tpe, "botorch": run_botorch,
}


# --- the benchmark -------------------------------------------------------------------------------------


@dataclass
class MethodResult:
    hv: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    skipped: str | None = None

    @property
    def hv_mean(self) -> float:
        return statistics.fmean(self.hv)

    @property
    def hv_std(self) -> float:
        return statistics.stdev(self.hv) if len(self.hv) > 1 else 0.0

    @property
    def seconds_mean(self) -> float:
        return statistics.fmean(self.seconds)

    @property
    def ok(self) -> bool:
        return not self.skipped and bool(self.hv)


@dataclass
class ProblemResult:
    bench: BenchProblem
    batch: int = 1
    budget: int = 0
    true_hv: float | None = None
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    methods: dict[str, MethodResult] = field(default_factory=dict)

    def best_rival(self) -> str | None:
        """The rival (reference or random) of highest mean hypervolume."""
        done = [r for r in RIVALS if r in self.methods and self.methods[r].ok]
        return max(done, key=lambda r: self.methods[r].hv_mean) if done else None


def unavailable(method: str) -> str | None:
    """Why ``method`` cannot run here, or None when it can."""
    if method in OURS:
        try:
            from nago_spec.strategies import STRATEGIES
        except Exception as exc:  # noqa: BLE001 -- a strategy module being edited may not import at all
            return f"skipped: nago_spec.strategies does not import ({type(exc).__name__}: {exc})"
        if ("bo" if method == "bo_ref" else method) not in STRATEGIES:
            return f"skipped: '{method}' is not in nago_spec.strategies.STRATEGIES yet"
        return None
    for module in REFERENCE_IMPORTS[method]:
        try:
            importlib.import_module(module)
        except ImportError:
            return INSTALL_HINT
    return None


@contextmanager
def quiet_libraries():
    """Silence the references' chatter (Optuna's log lines, BoTorch's and Optuna's warnings) for a run."""
    loggers = [logging.getLogger(n) for n in ("optuna", "botorch", "linear_operator", "gpytorch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        import optuna

        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    except ImportError:
        optuna, verbosity = None, None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(optuna|botorch|gpytorch|linear_operator)(\..*)?")
            if optuna is not None:
                warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if optuna is not None:
            optuna.logging.set_verbosity(verbosity)


def run_one(name: str, method: str, seed: int, evals: int | None, initial: int, batch: int,
            bo_options: Mapping[str, Any] | None = None) -> tuple[float, float, list[list[float]]]:
    """(hypervolume, wall seconds, scored points) of one method on one problem, seed and batch size."""
    task = Task.load(PROBLEMS[name], seed, evals, initial, batch)
    with quiet_libraries():
        start = time.perf_counter()
        F = run_ours(method, task, bo_options) if method in OURS else REFERENCE_RUNNERS[method](task)
        seconds = time.perf_counter() - start
    return hypervolume(F, task.ref), seconds, F.tolist()


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def true_front_hv(name: str, ref: np.ndarray) -> float:
    """Hypervolume of the problem's true front (see problems.true_front)."""
    return hypervolume(problems_module().true_front(name), ref)


def budget_of(name: str, evals: int | None, fraction: float = 1.0) -> int:
    """The evaluations of a run: ``evals``, else the spec's budget times ``fraction``."""
    if evals is not None:
        return evals
    return max(12, round(load_spec(PROBLEMS[name].spec).search.budget * fraction))


def run_benchmark(
    problems: Sequence[str], methods: Sequence[str], seeds: int, evals: int | None, initial: int,
    batches: Sequence[int] = (1,), jobs: int = 1, threads: int = 1, fraction: float = 1.0,
    log: Callable[[str], None] = lambda s: None, done: Mapping[tuple[str, int, str, int, int], Any] | None = None,
    record: Callable[[tuple[str, int, str, int, int], Any], None] = lambda key, out: None,
    method_seeds: Mapping[str, int] | None = None, read_only: bool = False,
    bo_options: Mapping[str, Any] | None = None,
) -> list[ProblemResult]:
    """Every method on every problem at every batch size and seeds 0 .. seeds-1; ``jobs`` runs at a time.

    ``done`` maps (problem, batch, method, seed, budget) to the (hv, seconds, points) of runs finished
    earlier, which are read back instead of run; ``record`` is told each run as it finishes.
    ``method_seeds`` caps the seeds of some methods (the slowest reference), where finished runs of
    more seeds are still read back. ``read_only`` runs nothing: the tables show the finished runs.
    ``bo_options`` join bo's options in every run of ``bo`` and ``bo_ref`` (``done`` must hold only runs
    made with them: ``_run_log`` keeps those).
    """
    done = dict(done or {})
    reasons = {m: unavailable(m) for m in methods}
    results: list[ProblemResult] = []
    work: list[tuple[ProblemResult, str, int]] = []
    for name in problems:
        bench = PROBLEMS[name]
        skipped = None
        if bench.table is not None:
            path = getattr(problems_module(), bench.table)()
            if not path.is_file():
                skipped = f"skipped: table not found at {path}"
        true_hv = None if skipped else true_front_hv(name, np.asarray(bench.ref))
        for batch in batches:
            res = ProblemResult(bench, batch, budget_of(name, evals, fraction), true_hv, skipped)
            results.append(res)
            if skipped:
                continue
            if any(o.cheap for o in load_spec(bench.spec).objectives):
                res.notes.append("cheap objectives are computed exactly by our strategies; the references model them")
            for method in methods:
                res.methods[method] = MethodResult(skipped=reasons[method])
                if not reasons[method]:
                    cap = (method_seeds or {}).get(method, seeds)
                    work += [(res, method, seed) for seed in range(seeds)
                             if seed < cap or (name, batch, method, seed, res.budget) in done]
    torch.set_num_threads(threads)
    key = lambda res, m, s: (res.bench.name, res.batch, m, s, res.budget)  # noqa: E731
    todo = [] if read_only else [(res, m, s) for res, m, s in work if key(res, m, s) not in done]
    work = [(res, m, s) for res, m, s in work if key(res, m, s) in done or not read_only]
    if jobs <= 1:
        fresh = (_safe(run_one, res.bench.name, m, s, res.budget, initial, res.batch, bo_options)
                 for res, m, s in todo)
    else:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(threads)
        import multiprocessing

        pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(threads,))
        futures = [pool.submit(_safe, run_one, res.bench.name, m, s, res.budget, initial, res.batch, bo_options)
                   for res, m, s in todo]
        fresh = (f.result() for f in futures)
    for (res, m, s), out in zip(todo, fresh):
        done[key(res, m, s)] = out
        if not isinstance(out, str):
            record(key(res, m, s), out)
    for res, method, seed in work:
        out = done[key(res, method, seed)]
        mres = res.methods[method]
        if isinstance(out, str):
            mres.skipped = f"failed at seed {seed}: {out}"
            log(f"{res.bench.name} q={res.batch} {method} seed {seed}: {mres.skipped}")
            continue
        hv, seconds, F = out
        mres.hv.append(hv)
        mres.seconds.append(seconds)
        log(f"{res.bench.name} q={res.batch} {method} seed {seed}: hv {hv:.4f}, {seconds:.2f} s, "
            f"{len(F)} scored points")
    if jobs > 1:
        pool.shutdown()
    for res in results:
        for mres in res.methods.values():
            if mres.skipped:
                mres.hv.clear()
                mres.seconds.clear()
            elif not mres.hv:
                mres.skipped = "not run yet"
    return results


def _safe(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or the error's text: one method failing must not lose the others' numbers."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"


def bo_batch_proposal_seconds(observations: int, seed: int = 0) -> float:
    """Seconds of one bo ask(4) on ZDT1 after telling ``observations`` Sobol points (including its GP fit).

    An untimed ask on 20 points goes first: the first ask in a process pays about 1.4 s of one-time
    set-up (imports, torch's first backward), which a run pays once, not per batch."""
    from nago_spec.strategies import STRATEGIES

    def told(n: int) -> Any:
        task = Task.load(PROBLEMS["zdt1"], seed, n, 10)
        strategy = STRATEGIES.get("bo")(task.problem, seed=seed, initial=10, batch=4)
        for tid, u in enumerate(task.problem.space.sobol(n, seed + 1)):
            params = task.problem.space.from_unit(u)
            strategy.tell(tid, params, task.evaluate(params, tid))
        return strategy

    told(20).ask(4, next_trial_id=20)
    strategy = told(observations)
    start = time.perf_counter()
    strategy.ask(4, next_trial_id=observations)
    return time.perf_counter() - start


# --- output --------------------------------------------------------------------------------------------


def _versions() -> str:
    out = [f"torch {torch.__version__}"]
    for module in ("pymoo", "optuna", "botorch", "greenlet"):
        try:
            out.append(f"{module} {importlib.import_module(module).__version__}")
        except ImportError:
            out.append(f"{module} absent")
    return ", ".join(out)


def header(args: argparse.Namespace) -> list[str]:
    lines = [
        "# Multi-objective optimisers: hypervolume and wall time (benchmarks/optimisers.py)",
        (f"runs read back from {args.runs} (the file records no machine, --jobs or versions); here: "
         f"{_versions()}" if args.report else
         f"cores {os.cpu_count()}, {args.threads} torch thread(s) per run, {args.jobs} run(s) at a time; "
         f"{_versions()}"),
        (f"seeds {args.seeds} (0..{args.seeds - 1}), initial design {args.initial} Sobol points, batches "
         f"{', '.join(map(str, args.batches))}, evaluations "
         f"{'per problem' if args.evals is None else args.evals}{' (30 % of each budget: --quick)' if args.quick else ''}"),
        ("references: GPSampler and TPE with Optuna's defaults (GPSampler: n_startup_trials = the design size), "
         "qLogNEHVI with 128 Sobol samples, 10 restarts, 512 raw samples and the scoring reference point, "
         "NSGA-II with population = the design size"),
    ]
    if args.bo_options:
        lines.append("bo's options (bo and bo_ref): " + ", ".join(f"{k} = {v!r}" for k, v in args.bo_options.items()))
    if "optuna" in args.methods:
        try:
            import greenlet  # noqa: F401
        except ImportError:
            lines.append("optuna: the 'greenlet' package is absent, so GPSampler optimises its acquisition "
                         "with sequential L-BFGS-B (slower suggestions)")
    return lines


def _fmt(x: float | None) -> str:
    """Two decimals, or two significant digits below 0.1 (sub-second methods' times and ratios)."""
    if x is None:
        return "n/a"
    return f"{x:.2f}" if abs(x) >= 0.1 or x == 0 else f"{x:.2g}"


def _ratio(a: MethodResult | None, b: MethodResult | None, what: str) -> float | None:
    """a's mean over b's; for hypervolumes over a zero one, inf (or 1 when both are 0)."""
    if a is None or b is None or not a.ok or not b.ok:
        return None
    num, den = getattr(a, what), getattr(b, what)
    if den > 0:
        return num / den
    return None if what != "hv_mean" else (float("inf") if num > 0 else 1.0)


def table(res: ProblemResult) -> list[str]:
    """The Markdown table of one problem at one batch size."""
    bench = res.bench
    lines = [f"## {bench.name}, batch {res.batch}: {bench.title}"]
    if res.skipped:
        return lines + [res.skipped, ""]
    best = res.best_rival()
    lines.append(f"{res.budget} evaluations, reference point {bench.ref}, true front hypervolume {res.true_hv:.4f}; "
                 f"best reference: {LABELS[best] if best else 'n/a'}")
    lines += [f"note: {n}" for n in res.notes]
    lines += [
        "",
        "| method | HV (mean ± std) | HV / true front | wall s | HV / best ref | wall / qLogNEHVI | wall / GPSampler |",
        "|---|---|---|---|---|---|---|",
    ]
    ref = res.methods.get(best) if best else None
    max_seeds = max((len(m.hv) for m in res.methods.values()), default=0)
    for method, m in res.methods.items():
        if m.skipped:
            lines.append(f"| {LABELS[method]} | {m.skipped} | | | | | |")
            continue
        hv_ratio = _ratio(m, ref, "hv_mean")
        lines.append(
            f"| {LABELS[method]}{'' if len(m.hv) == max_seeds else f' ({len(m.hv)} seeds)'} | "
            f"{m.hv_mean:.4f} ± {m.hv_std:.4f} | {m.hv_mean / res.true_hv:.3f} | "
            f"{_fmt(m.seconds_mean)} | {'n/a' if hv_ratio is None else f'{hv_ratio:.3f}'} | "
            f"{_fmt(_ratio(m, res.methods.get('botorch'), 'seconds_mean'))} | "
            f"{_fmt(_ratio(m, res.methods.get('optuna'), 'seconds_mean'))} |"
        )
    return lines + [""]


def summary(results: Sequence[ProblemResult]) -> list[str]:
    """bo against issue 18's targets, a row per problem and batch size."""
    rows = [r for r in results if not r.skipped and "bo" in r.methods and r.methods["bo"].ok]
    if not rows:
        return []
    lines = [
        "## bo against the targets",
        "",
        "| problem | batch | bo HV / true | bo / best ref (>= 0.99) | bo / random (>= 1) | "
        "wall / qLogNEHVI (<= 0.2) | wall / GPSampler (<= 0.5) | bo given the ref / best ref |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        bo = r.methods["bo"]
        best = r.best_rival()
        vs_best = _ratio(bo, r.methods.get(best) if best else None, "hv_mean")
        vs_random = _ratio(bo, r.methods.get("random"), "hv_mean")
        given = _ratio(r.methods.get("bo_ref"), r.methods.get(best) if best else None, "hv_mean")
        lines.append(
            f"| {r.bench.name} | {r.batch} | {bo.hv_mean / r.true_hv:.3f} | {_mark(vs_best, 0.99)} | "
            f"{_mark(vs_random, 1.0)} | {_mark(_ratio(bo, r.methods.get('botorch'), 'seconds_mean'), 0.2, False)} | "
            f"{_mark(_ratio(bo, r.methods.get('optuna'), 'seconds_mean'), 0.5, False)} | "
            f"{'n/a' if given is None else f'{given:.3f}'} |"
        )
    return lines + [""]


def _mark(x: float | None, bar: float, at_least: bool = True) -> str:
    if x is None:
        return "n/a"
    ok = x >= bar if at_least else x <= bar
    return f"{x:.3f} {'ok' if ok else 'MISSED'}"


def to_json(results: list[ProblemResult], args: argparse.Namespace, batch4: float | None) -> dict[str, Any]:
    return {
        "threads": args.threads,
        "jobs": args.jobs,
        "seeds": args.seeds,
        "initial": args.initial,
        "bo_batch4_seconds": batch4,
        "bo_batch4_observations": args.batch4_at,
        "bo_options": args.bo_options,
        "problems": [
            {
                "problem": r.bench.name,
                "batch": r.batch,
                "skipped": r.skipped,
                "budget": r.budget,
                "ref": list(r.bench.ref),
                "true_hv": r.true_hv,
                "methods": {
                    name: {"skipped": m.skipped, "hv": m.hv, "seconds": m.seconds} for name, m in r.methods.items()
                },
            }
            for r in results
        ],
    }


def _run_log(path: Path, bo_options: Mapping[str, Any] | None = None
             ) -> tuple[dict[tuple[str, int, str, int, int], Any], Callable[[Any, Any], None]]:
    """The runs a JSON-lines file holds, and a function appending one to it. A run of bo (or bo_ref) is
    read back only where it was made with ``bo_options`` (a line without them was made with none)."""
    bo_options = dict(bo_options or {})
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r["method"] in ("bo", "bo_ref") and r.get("bo_options", {}) != bo_options:
                    continue
                done[(r["problem"], r["batch"], r["method"], r["seed"], r["budget"])] = (r["hv"], r["seconds"], r["F"])

    def record(key: tuple[str, int, str, int, int], out: Any) -> None:
        problem, batch, method, seed, budget = key
        row = {"problem": problem, "batch": batch, "method": method, "seed": seed, "budget": budget}
        if method in ("bo", "bo_ref") and bo_options:
            row["bo_options"] = bo_options
        with path.open("a") as f:
            f.write(json.dumps({**row, "hv": out[0], "seconds": out[1], "F": out[2]}) + "\n")

    return done, record


def _names(text: str, valid: Sequence[str], what: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown {what} {bad or text!r}; valid: {', '.join(valid)}")
    return names


def _method_seeds(text: str) -> dict[str, int]:
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, n = item.partition("=")
        if name not in METHODS or not n.isdigit() or int(n) < 1:
            raise argparse.ArgumentTypeError(f"expected METHOD=N with a method of {', '.join(METHODS)}, got {item!r}")
        out[name] = int(n)
    return out


def _bo_option(text: str) -> tuple[str, Any]:
    """KEY=VALUE, the value read as TOML (``scalarise_every=0``, ``batch_rule="believer"``)."""
    key, sep, value = text.partition("=")
    try:
        if not sep or not key.strip():
            raise ValueError
        return key.strip(), tomllib.loads(f"v = {value.strip()}")["v"]
    except (ValueError, tomllib.TOMLDecodeError):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with a TOML value, got {text!r}") from None


def _batches(text: str) -> list[int]:
    try:
        out = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"batches must be positive integers, got {text!r}")
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=lambda s: _names(s, tuple(PROBLEMS), "problem"), default=list(PROBLEMS))
    ap.add_argument("--methods", type=lambda s: _names(s, METHODS, "method"), default=list(METHODS))
    ap.add_argument("--seeds", type=int, default=None, help="seeds 0 .. N-1 (default 5; 1 with --quick)")
    ap.add_argument("--batches", type=_batches, default=[1, 4], help="batch sizes (default 1,4)")
    ap.add_argument("--evals", type=int, default=None, help="evaluations per run, overriding every problem's budget")
    ap.add_argument("--initial", type=int, default=10, help="Sobol points before any model (default 10)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process (default 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    ap.add_argument("--quick", action="store_true", help="one seed at 30 %% of each budget (development)")
    ap.add_argument("--batch4-at", type=int, default=200,
                    help="time bo's ask(4) after this many ZDT1 observations (default 200; 0 skips)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--method-seeds", type=_method_seeds, default={},
                    help="fewer seeds for some methods, e.g. botorch=3 (finished runs of more are still read back)")
    ap.add_argument("--report", action="store_true",
                    help="run nothing: print the tables of the runs --runs holds (seeds up to --seeds)")
    ap.add_argument("--runs", type=Path, default=None,
                    help="a JSON-lines file of finished runs: read back instead of rerun, and appended to as "
                         "runs finish (so a long run can be resumed, or methods added later)")
    ap.add_argument("--bo-option", type=_bo_option, action="append", default=[], metavar="KEY=VALUE",
                    help="one of bo's options (README, [search.options]) for every run of bo and bo_ref, e.g. "
                         "scalarise_every=0; repeatable. A --runs file reads back only bo runs made with the same")
    args = ap.parse_args(argv)
    args.bo_options = dict(args.bo_option)
    if args.bo_options:
        from nago_spec.strategies.bo import BOStrategy

        try:  # the strategy judges its options, as a spec's load does
            BOStrategy(Task.load(PROBLEMS["zdt1"], 0, 10, 2).problem, seed=0, options=args.bo_options)
        except ValueError as exc:
            ap.error(f"--bo-option: {exc}")
    if args.seeds is None:
        args.seeds = 1 if args.quick else 5
    if min(args.seeds, args.initial, args.jobs, args.threads) < 1 or (args.evals is not None and args.evals < 1):
        ap.error("--seeds, --initial, --jobs, --threads and --evals must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for line in header(args):
        print(line)
    print(flush=True)
    done, record = {}, lambda key, out: None
    if args.runs is not None:
        done, record = _run_log(args.runs, args.bo_options)
    results = run_benchmark(args.problems, args.methods, args.seeds, args.evals, args.initial, args.batches,
                            args.jobs, args.threads, 0.3 if args.quick else 1.0,
                            log=lambda s: print(s, file=sys.stderr, flush=True), done=done, record=record,
                            method_seeds=args.method_seeds, read_only=args.report, bo_options=args.bo_options)
    for res in results:
        for line in table(res):
            print(line)
    for line in summary(results):
        print(line)
    batch4 = None
    if "bo" in args.methods and args.batch4_at > 0 and not args.report:
        reason = unavailable("bo")
        if reason:
            print(f"bo batch-4 proposal: {reason}")
        else:
            batch4 = bo_batch_proposal_seconds(args.batch4_at)
            print(f"bo batch-4 proposal at {args.batch4_at} observations: {batch4:.2f} s (target <= 2 s)")
    if args.json:
        args.json.write_text(json.dumps(to_json(results, args, batch4), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
