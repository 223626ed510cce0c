"""Multi-objective optimisers on black-box problems: our strategies against pymoo, Optuna and BoTorch.

Problems (params-mode specs in benchmarks/specs/, objectives in benchmarks/problems.py, all minimised):

- ``zdt1``, ``zdt2``: 6 variables in [0, 1], reference point (1.1, 1.1), 100 evaluations;
- ``dtlz2``: 3 objectives, 6 variables, reference (1.1, 1.1, 1.1), 100 evaluations;
- ``nasbench_macro``: NAS-Bench-Macro on CIFAR-10, 8 categorical layers (3 choices each), objectives
  ``error`` = 1 - accuracy / 100 and ``params`` = parameters / the table's largest, reference (1.1, 1.1),
  50 evaluations. Its ``params`` is marked ``cheap = true``: it is known without training, exactly the
  case our cheap-objective design is for, so ``bo`` computes it exactly and models only ``error``;
  the references treat both objectives as black boxes. Skipped, with the reason printed, when the
  table is absent (it lives in ../shared/data beside the repository, or at ``$NAGO_NASBENCH_MACRO``).

Methods:

- ``bo``, ``evolution``, ``random`` (ours), through the spec: ``load_spec``, ``Evaluator(spec).problem(None)``,
  the strategy from ``STRATEGIES`` with ``batch=1``, then a sequential ask(1) / evaluate / tell loop
  for the budget. That loop is what ``nago run`` does with batch 1 and the local backend, less the
  SQLite store, the progress display and the report: driving the real runner costs 0.65 s more per
  run of 100 ZDT1 evaluations (measured: random takes 0.005 s in the loop and 0.65 s through
  ``runners.run.run``), which would swamp the wall time of the fast methods. A method not yet in
  the registry is skipped with a note.
- ``nsga2``: pymoo's NSGA-II, population = ``initial`` (10: 10 generations for 100 evaluations, 5 for
  50), real-coded (SBX, polynomial mutation) on the unit cube; a point is decoded with the spec's
  own encoding (``SearchSpace.from_unit``: a categorical takes the bin its coordinate falls in), and
  duplicates are judged on the decoded parameters. The last generation is cut at the budget.
- ``optuna``: Optuna's ``GPSampler`` (multi-objective, seeded, ``n_startup_trials = initial``) through
  ask/tell with the spec's parameters as native Optuna distributions (categoricals included).
- ``botorch``: BoTorch's qLogNEHVI in the loop of its multi-objective tutorial: a ``ModelListGP`` of
  one ``SingleTaskGP`` per objective (``Standardize`` outcomes, ``Normalize`` inputs to the unit
  cube), ``fit_gpytorch_mll``, ``qLogNoisyExpectedHypervolumeImprovement`` with the reference point
  negated (BoTorch maximises), 128 Sobol MC samples and ``prune_baseline=True``, ``optimize_acqf``
  with q=1, num_restarts=10, raw_samples=512 (batch_limit 5, maxiter 200). Inputs are the spec's
  unit-cube encoding; for NAS-Bench-Macro a candidate is rounded to its categorical bin (the
  integer-rounded encoding, d = 8) before it is evaluated and enters the data. It is the baseline
  of the ratio columns.

Every method starts from the same ``initial`` (default 10) points: the scrambled Sobol design our
``bo`` and ``evolution`` draw for the seed (``random`` draws uniform points throughout, by design).
The seed drives both that design and each method's own randomness. Wall time covers the whole
loop (model fits, proposals and evaluations). Thread counts are left as the machine gives them, the
same for every method since all run in this process; the header prints torch's.

Each table shows, per method: hypervolume (pymoo's indicator) of all evaluated points, mean ± std
over seeds; that as a fraction of the true front's hypervolume (ZDT1/ZDT2: 10^4 points of the
analytic front, 0.8766 / 0.5433 — the issue's 0.871 / 0.538 are pymoo's 100-point fronts; DTLZ2: 10^6
points of the sphere's orthant, 0.8067 of the exact 0.8074; NAS-Bench-Macro: the exact front of the
full table); mean wall seconds; and both as ratios to qLogNEHVI (n/a when it was skipped).

    python benchmarks/optimisers.py [--problems zdt1,zdt2,dtlz2,nasbench_macro]
        [--methods bo,evolution,random,nsga2,optuna,botorch] [--seeds 3] [--evals N] [--initial 10]
        [--batch4-at 200] [--json out.json]

It also times, for ``bo`` only, one ask(4) after telling ``--batch4-at`` (200) Sobol points of ZDT1
("bo batch-4 proposal at 200 observations: X s"; 0 skips it).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
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

OURS = ("bo", "evolution", "random")
REFERENCES = ("nsga2", "optuna", "botorch")
METHODS = OURS + REFERENCES
BASELINE = "botorch"
LABELS = {
    "bo": "bo (ours)",
    "evolution": "evolution (ours)",
    "random": "random (ours)",
    "nsga2": "NSGA-II (pymoo)",
    "optuna": "GPSampler (Optuna)",
    "botorch": "qLogNEHVI (BoTorch)",
}
#: the modules each reference needs, imported before any timing; one that fails to import skips the reference
REFERENCE_IMPORTS = {
    "nsga2": ("pymoo.algorithms.moo.nsga2",),
    "optuna": ("optuna",),
    "botorch": ("botorch.acquisition.multi_objective.logei", "botorch.fit", "botorch.optim", "gpytorch"),
}
INSTALL_HINT = "skipped: pip install -c constraints.txt '.[bench]'"


@dataclass(frozen=True)
class BenchProblem:
    """A benchmark problem: its spec, hypervolume reference point (minimisation) and a description."""

    name: str
    spec: Path
    ref: tuple[float, ...]
    title: str


PROBLEMS = {
    "zdt1": BenchProblem("zdt1", SPECS / "zdt1.toml", (1.1, 1.1), "ZDT1, 6 variables"),
    "zdt2": BenchProblem("zdt2", SPECS / "zdt2.toml", (1.1, 1.1), "ZDT2, 6 variables"),
    "dtlz2": BenchProblem("dtlz2", SPECS / "dtlz2.toml", (1.1, 1.1, 1.1), "DTLZ2, 3 objectives, 6 variables"),
    "nasbench_macro": BenchProblem(
        "nasbench_macro", SPECS / "nasbench_macro.toml", (1.1, 1.1),
        "NAS-Bench-Macro CIFAR-10, 8 categorical layers; error and params / max params",
    ),
}


def problems_module() -> ModuleType:
    """benchmarks/problems.py as the specs import it (the same module object, so its table cache is shared)."""
    fn = load_callable("problems.py:zdt1", HERE)
    return sys.modules[fn.__module__]


# --- one (problem, seed) -----------------------------------------------------------------------------


@dataclass
class Task:
    """One problem at one seed: the spec, its evaluator, the optimiser's Problem and the budget."""

    bench: BenchProblem
    spec: Spec
    evaluator: Evaluator
    problem: Problem
    seed: int
    budget: int
    initial: int

    @classmethod
    def load(cls, bench: BenchProblem, seed: int, budget: int | None, initial: int) -> Task:
        spec = load_spec(bench.spec, {"seed": seed})
        evaluator = Evaluator(spec)
        return cls(bench, spec, evaluator, evaluator.problem(None), seed,
                   int(budget if budget is not None else spec.search.budget), initial)

    @property
    def ref(self) -> np.ndarray:
        return np.asarray(self.bench.ref, dtype=float)

    def evaluate(self, params: Mapping[str, Any], trial_id: int) -> dict[str, float] | None:
        """The objective values of one point (the user's directions), or None when the trial fails."""
        try:
            values, _ = self.evaluator.evaluate(params, trial_id, None)
        except TrialError:
            return None
        return values

    def minimised(self, values: Mapping[str, float]) -> np.ndarray:
        """Values (m,) in minimisation form, ordered as the problem's objectives."""
        return to_minimization(values, self.problem.objectives)

    def initial_design(self) -> np.ndarray:
        """The unit points (initial x d) our bo and evolution propose first: the seed's scrambled Sobol design."""
        sobol_seed = RandomStrategy(self.problem, seed=self.seed).child_seed(STREAM_SOBOL)
        return self.problem.space.sobol(self.initial, sobol_seed)


@dataclass
class Outcome:
    """The result of one method on one task: the evaluated points (n x m, minimisation) and the wall time."""

    F: np.ndarray
    seconds: float


class Recorder:
    """Evaluates points for a method, keeps the values (minimisation form) and counts the budget."""

    def __init__(self, task: Task):
        self.task = task
        self.rows: list[np.ndarray] = []
        self.count = 0

    @property
    def left(self) -> int:
        return self.task.budget - self.count

    def __call__(self, params: Mapping[str, Any]) -> dict[str, float] | None:
        values = self.task.evaluate(params, self.count)
        self.count += 1
        if values is not None:
            self.rows.append(self.task.minimised(values))
        return values

    @property
    def F(self) -> np.ndarray:
        m = len(self.task.problem.objectives)
        return np.array(self.rows, dtype=float).reshape(-1, m)


# --- our strategies ------------------------------------------------------------------------------------


def run_ours(name: str, task: Task) -> np.ndarray:
    """A sequential ask(1) / evaluate / tell loop of strategy ``name``, as ``nago run`` does with batch 1."""
    from nago_spec.strategies import STRATEGIES

    options = task.spec.search.options if task.spec.search.strategy == name else {}
    strategy = STRATEGIES.get(name)(task.problem, seed=task.seed, initial=task.initial, batch=1, options=options)
    rec = Recorder(task)
    for tid in range(task.budget):
        params = strategy.ask(1, next_trial_id=tid)[0]
        strategy.tell(tid, params, rec(params))
    return rec.F


# --- references ----------------------------------------------------------------------------------------


def run_nsga2(task: Task) -> np.ndarray:
    """pymoo's NSGA-II on the unit cube, population ``initial``, seeded, first population the Sobol design."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.duplicate import ElementwiseDuplicateElimination
    from pymoo.core.problem import Problem as PymooProblem

    space = task.problem.space
    objectives = task.problem.objectives
    m = len(objectives)
    rec = Recorder(task)

    def decoded(ind: Any) -> tuple[Any, ...]:
        return tuple(space.from_unit(ind.X).values())

    algorithm = NSGA2(
        pop_size=task.initial,
        sampling=task.initial_design(),
        eliminate_duplicates=ElementwiseDuplicateElimination(cmp_func=lambda a, b: decoded(a) == decoded(b)),
    )
    algorithm.setup(PymooProblem(n_var=space.dim, n_obj=m, xl=0.0, xu=1.0), seed=task.seed, verbose=False)
    while rec.left > 0:
        pop = algorithm.ask()
        X = pop.get("X")[: rec.left]
        F = np.empty((len(X), m))
        for i, x in enumerate(X):
            values = rec(space.from_unit(x))
            # a failed point: worse than anything, so selection drops it (none of these problems fails)
            F[i] = task.minimised(values) if values is not None else np.full(m, 1e6)
        if len(X) < len(pop):  # the budget ends inside this generation
            break
        pop.set("F", F)
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


def run_optuna(task: Task) -> np.ndarray:
    """Optuna's GPSampler through ask/tell; the Sobol design is enqueued as its startup trials."""
    import optuna
    from optuna.trial import TrialState

    space = task.problem.space
    objectives = task.problem.objectives
    sampler = optuna.samplers.GPSampler(seed=task.seed, n_startup_trials=task.initial)
    study = optuna.create_study(directions=[o.direction for o in objectives], sampler=sampler)
    for u in task.initial_design():
        study.enqueue_trial(space.from_unit(u))
    dists = optuna_distributions(task)
    rec = Recorder(task)
    for _ in range(task.budget):
        trial = study.ask(dists)
        values = rec(trial.params)
        if values is None:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, [values[o.name] for o in objectives])
    return rec.F


def run_botorch(task: Task) -> np.ndarray:
    """BoTorch's qLogNEHVI, the loop of its multi-objective tutorial, q = 1, on the unit-cube encoding."""
    from botorch.acquisition.multi_objective.logei import (
        qLogNoisyExpectedHypervolumeImprovement,
    )
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import ModelListGP, SingleTaskGP
    from botorch.models.transforms import Normalize, Standardize
    from botorch.optim import optimize_acqf
    from botorch.sampling import SobolQMCNormalSampler
    from gpytorch.mlls import SumMarginalLogLikelihood

    tkwargs: dict[str, Any] = {"dtype": torch.double}
    space = task.problem.space
    d, m = space.dim, len(task.problem.objectives)
    bounds = torch.stack([torch.zeros(d, **tkwargs), torch.ones(d, **tkwargs)])
    ref_point = torch.as_tensor(-task.ref, **tkwargs)  # BoTorch maximises: negate the minimisation reference
    torch.manual_seed(task.seed)
    rec = Recorder(task)
    X: list[np.ndarray] = []
    Y: list[np.ndarray] = []

    def observe(u: np.ndarray) -> None:
        u = space.snap(u)[0]  # a categorical coordinate is rounded to its bin's centre
        values = rec(space.from_unit(u))
        if values is not None:
            X.append(u)
            Y.append(-task.minimised(values))

    for u in task.initial_design()[: task.budget]:
        observe(u)
    while rec.left > 0:
        train_x = torch.as_tensor(np.array(X), **tkwargs)
        train_y = torch.as_tensor(np.array(Y), **tkwargs)
        models = [
            SingleTaskGP(train_x, train_y[:, i : i + 1], outcome_transform=Standardize(m=1),
                         input_transform=Normalize(d=d, bounds=bounds))
            for i in range(m)
        ]
        model = ModelListGP(*models)
        fit_gpytorch_mll(SumMarginalLogLikelihood(model.likelihood, model))
        acqf = qLogNoisyExpectedHypervolumeImprovement(
            model=model, ref_point=ref_point, X_baseline=train_x, prune_baseline=True,
            sampler=SobolQMCNormalSampler(sample_shape=torch.Size([128])),
        )
        candidate, _ = optimize_acqf(
            acqf, bounds=bounds, q=1, num_restarts=10, raw_samples=512,
            options={"batch_limit": 5, "maxiter": 200}, sequential=True,
        )
        observe(candidate.detach().numpy().reshape(-1))
    return rec.F


REFERENCE_RUNNERS: dict[str, Callable[[Task], np.ndarray]] = {
    "nsga2": run_nsga2, "optuna": run_optuna, "botorch": run_botorch,
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


@dataclass
class ProblemResult:
    bench: BenchProblem
    budget: int = 0
    true_hv: float | None = None
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    methods: dict[str, MethodResult] = field(default_factory=dict)


def unavailable(method: str) -> str | None:
    """Why ``method`` cannot run here, or None when it can."""
    if method in OURS:
        try:
            from nago_spec.strategies import STRATEGIES
        except Exception as exc:  # noqa: BLE001 -- a strategy module being edited may not import at all
            return f"skipped: nago_spec.strategies does not import ({type(exc).__name__}: {exc})"
        if method not in STRATEGIES:
            return f"skipped: '{method}' is not in nago_spec.strategies.STRATEGIES yet"
        return None
    for module in REFERENCE_IMPORTS[method]:
        try:
            importlib.import_module(module)
        except ImportError:
            return INSTALL_HINT
    return None


def run_method(method: str, task: Task) -> Outcome:
    """Run one method on one task, timing the whole loop."""
    start = time.perf_counter()
    F = run_ours(method, task) if method in OURS else REFERENCE_RUNNERS[method](task)
    return Outcome(F, time.perf_counter() - start)


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


def true_front_hv(name: str, ref: np.ndarray) -> float:
    """Hypervolume of the problem's true front (see problems.true_front)."""
    return hypervolume(problems_module().true_front(name), ref)


def run_benchmark(
    problems: Sequence[str], methods: Sequence[str], seeds: int, evals: int | None, initial: int,
    log: Callable[[str], None] = lambda s: None,
) -> list[ProblemResult]:
    """Every method on every problem at seeds 0 .. seeds-1."""
    reasons = {m: unavailable(m) for m in methods}
    results = []
    for name in problems:
        bench = PROBLEMS[name]
        res = ProblemResult(bench)
        results.append(res)
        if name == "nasbench_macro":
            path = problems_module().nasbench_macro_path()
            if not path.is_file():
                res.skipped = (f"skipped: NAS-Bench-Macro table not found at {path} "
                               f"(set ${problems_module().NASBENCH_MACRO_ENV} to its path)")
                continue
            res.notes.append("`params` is cheap (known without training): bo computes it exactly and models "
                             "only `error`; the references model both")
        res.true_hv = true_front_hv(name, np.asarray(bench.ref))
        for method in methods:
            mres = res.methods.setdefault(method, MethodResult(skipped=reasons[method]))
            if mres.skipped:
                continue
            for seed in range(seeds):
                task = Task.load(bench, seed, evals, initial)
                res.budget = task.budget
                try:
                    with quiet_libraries():
                        out = run_method(method, task)
                except Exception as exc:  # noqa: BLE001 -- one method failing must not lose the others' numbers
                    mres.skipped = f"failed at seed {seed}: {type(exc).__name__}: {exc}"
                    log(f"{name} {method} seed {seed}: {mres.skipped}")
                    break
                hv = hypervolume(out.F, task.ref)
                mres.hv.append(hv)
                mres.seconds.append(out.seconds)
                log(f"{name} {method} seed {seed}: hv {hv:.4f}, {out.seconds:.2f} s, {len(out.F)} evaluations")
            if mres.skipped:
                mres.hv.clear()
                mres.seconds.clear()
    return results


def bo_batch_proposal_seconds(observations: int, seed: int = 0) -> float:
    """Seconds of one bo ask(4) on ZDT1 after telling ``observations`` Sobol points (including its GP fit)."""
    from nago_spec.strategies import STRATEGIES

    task = Task.load(PROBLEMS["zdt1"], seed, observations, 10)
    strategy = STRATEGIES.get("bo")(task.problem, seed=seed, initial=10, batch=4)
    for tid, u in enumerate(task.problem.space.sobol(observations, seed + 1)):
        params = task.problem.space.from_unit(u)
        strategy.tell(tid, params, task.evaluate(params, tid))
    start = time.perf_counter()
    strategy.ask(4, next_trial_id=observations)
    return time.perf_counter() - start


# --- output --------------------------------------------------------------------------------------------


def _versions() -> str:
    out = [f"torch {torch.__version__}"]
    for module in ("pymoo", "optuna", "botorch"):
        try:
            out.append(f"{module} {importlib.import_module(module).__version__}")
        except ImportError:
            out.append(f"{module} absent")
    return ", ".join(out)


def header(args: argparse.Namespace) -> list[str]:
    lines = [
        "# Multi-objective optimisers: hypervolume and wall time (benchmarks/optimisers.py)",
        f"cores {os.cpu_count()}, torch threads {torch.get_num_threads()} (the same for every method); {_versions()}",
        (f"seeds {args.seeds} (0..{args.seeds - 1}), initial design {args.initial} Sobol points, batch 1, "
         f"evaluations {'per problem' if args.evals is None else args.evals}"),
    ]
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


def table(res: ProblemResult) -> list[str]:
    """The Markdown table of one problem."""
    bench = res.bench
    lines = [f"## {bench.name}: {bench.title}"]
    if res.skipped:
        return lines + [res.skipped, ""]
    lines.append(f"{res.budget} evaluations, reference point {bench.ref}, true front hypervolume {res.true_hv:.4f}")
    lines += [f"note: {n}" for n in res.notes]
    lines += [
        "",
        "| method | HV (mean ± std) | HV / true front | wall s | HV / qLogNEHVI | wall / qLogNEHVI |",
        "|---|---|---|---|---|---|",
    ]
    base = res.methods.get(BASELINE)
    has_base = base is not None and not base.skipped and base.hv
    for method, m in res.methods.items():
        if m.skipped:
            lines.append(f"| {LABELS[method]} | {m.skipped} | | | | |")
            continue
        hv_ratio = m.hv_mean / base.hv_mean if has_base and base.hv_mean > 0 else None
        t_ratio = m.seconds_mean / base.seconds_mean if has_base else None
        lines.append(
            f"| {LABELS[method]} | {m.hv_mean:.4f} ± {m.hv_std:.4f} | {m.hv_mean / res.true_hv:.3f} | "
            f"{_fmt(m.seconds_mean)} | {'n/a' if hv_ratio is None else f'{hv_ratio:.3f}'} | {_fmt(t_ratio)} |"
        )
    return lines + [""]


def to_json(results: list[ProblemResult], args: argparse.Namespace, batch4: float | None) -> dict[str, Any]:
    return {
        "torch_threads": torch.get_num_threads(),
        "seeds": args.seeds,
        "initial": args.initial,
        "bo_batch4_seconds": batch4,
        "bo_batch4_observations": args.batch4_at,
        "problems": {
            r.bench.name: {
                "skipped": r.skipped,
                "budget": r.budget,
                "ref": list(r.bench.ref),
                "true_hv": r.true_hv,
                "methods": {
                    name: {"skipped": m.skipped, "hv": m.hv, "seconds": m.seconds} for name, m in r.methods.items()
                },
            }
            for r in results
        },
    }


def _names(text: str, valid: Sequence[str], what: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown {what} {bad or text!r}; valid: {', '.join(valid)}")
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=lambda s: _names(s, tuple(PROBLEMS), "problem"), default=list(PROBLEMS))
    ap.add_argument("--methods", type=lambda s: _names(s, METHODS, "method"), default=list(METHODS))
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 (default 3)")
    ap.add_argument("--evals", type=int, default=None, help="evaluations per run, overriding every problem's budget")
    ap.add_argument("--initial", type=int, default=10, help="Sobol points before any model (default 10)")
    ap.add_argument("--batch4-at", type=int, default=200,
                    help="time bo's ask(4) after this many ZDT1 observations (default 200; 0 skips)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    if args.seeds < 1 or args.initial < 1 or (args.evals is not None and args.evals < 1):
        ap.error("--seeds, --initial and --evals must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for line in header(args):
        print(line)
    print(flush=True)
    results = run_benchmark(args.problems, args.methods, args.seeds, args.evals, args.initial,
                            log=lambda s: print(s, file=sys.stderr, flush=True))
    for res in results:
        for line in table(res):
            print(line)
    batch4 = None
    if "bo" in args.methods and args.batch4_at > 0:
        reason = unavailable("bo")
        if reason:
            print(f"bo batch-4 proposal: {reason}")
        else:
            batch4 = bo_batch_proposal_seconds(args.batch4_at)
            print(f"bo batch-4 proposal at {args.batch4_at} observations: {batch4:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(to_json(results, args, batch4), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
