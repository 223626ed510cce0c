"""Why bo lost on problems it was not tuned on (issue 18): the shipped bo against itself with one part put back.

Each variant is the shipped ``bo`` with one change, applied by patching the module in the worker:

- ``bo``: as shipped.
- ``front-ref``: the reference point at the observed front's nadir plus a tenth of its range, with no
  credit beyond it (the rule before issue 18, and BoTorch's ``infer_reference_point``).
- ``worst-ref``: the reference point at the worst observed value plus a tenth of its distance to the
  best (Optuna's GPSampler), no credit for extension beyond it.
- ``range-ref``: extension credit out to the front's nadir plus its range (at most the worst observed
  value), not the worst value observed or predicted.
- ``exact-front``: the observed values taken as an exact front and each candidate sampled alone (plain
  Monte-Carlo EHVI, as before issue 18), so noise in the front is rewarded.
- ``tail-credit``: samples beyond the best observed value credited in full (no clamp at the median).
- ``lcb-pool``: candidates only from NSGA-II on the optimistic front (the pool before issue 18).
- ``no-cheap-inputs``: the GPs do not see the cheap objectives as inputs.
- ``no-gradient``: a local random search instead of L-BFGS-B on the acquisition.
- ``initial-20``: a Sobol design of 20 points instead of 10 (the initial design's size).

Problems and scoring are benchmarks/optimisers.py's (hypervolume of the feasible evaluated points
against the problem's reference point, as a fraction of the true front's).

    python benchmarks/bo_ablation.py [--variants ...] [--problems ...] [--seeds 3] [--evals 50] [--jobs 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import optimisers  # noqa: E402  (benchmarks/ is not a package)

from nago_spec.pareto import hypervolume  # noqa: E402

PROBLEMS = ("zdt3", "zdt1_noisy", "kursawe", "dtlz2", "c2dtlz2", "nasbench_macro", "nb201")


def _one_reference(rule: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[[object], None]:
    """A patch putting the inner and the outer reference point both at ``rule(front, observed)``: no credit
    for extending the front beyond it."""

    def patch(bo: object) -> None:
        def points(front: np.ndarray, observed: np.ndarray, predicted: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray]:
            ref = rule(front, observed)
            return ref, ref

        bo._reference_points = points

    return patch


_front_ref = _one_reference(lambda front, observed: front.max(axis=0) + 0.1 * np.ptp(front, axis=0))
_worst_ref = _one_reference(lambda front, observed: observed.max(axis=0)
                            + 0.1 * (observed.max(axis=0) - front.min(axis=0)))


def _range_ref(bo: object) -> None:
    def points(front: np.ndarray, observed: np.ndarray, predicted: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        ideal, nadir = front.min(axis=0), front.max(axis=0)
        worst = observed.max(axis=0)
        if predicted is not None and len(predicted):
            worst = np.maximum(worst, predicted.max(axis=0))
        span = np.where(nadir > ideal, nadir - ideal, np.maximum(worst - ideal, 0.0))
        near = nadir + 0.1 * (nadir - ideal)
        far = np.minimum(worst + 0.1 * np.maximum(worst - ideal, 0.0), nadir + span)
        return near, np.maximum(far, near)

    bo._reference_points = points


def _observed_near(bo: object) -> None:
    real = bo._reference_points

    def points(front: np.ndarray, observed: np.ndarray, predicted: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        ideal, nadir = front.min(axis=0), front.max(axis=0)
        return nadir + 0.1 * (nadir - ideal), real(front, observed, predicted)[1]

    bo._reference_points = points


def _exact_front(bo: object) -> None:
    class ExactFront(bo._NEHVI):
        """Observed rows at their observed (noisy) values; candidates sampled independently of them."""

        def _baseline_samples(self) -> torch.Tensor:
            base = super()._baseline_samples()
            n = self.sur.n_observations
            base[:, :, :n] = self.sur.y[:, None, :]
            self.LB = None
            return base

    bo._NEHVI = ExactFront


def _tail_credit(bo: object) -> None:
    bo._clamp_extension = lambda F, median, floors: F


def _lcb_pool(bo: object) -> None:
    def candidates(self, trial_id, surrogates, complete, F_obs, viol_obs):
        return self.problem.space.snap(self._nsga(trial_id, surrogates, complete, F_obs, viol_obs))

    bo.BOStrategy._candidates = candidates


def _no_cheap_inputs(bo: object) -> None:
    bo._CheapScale.of = classmethod(lambda cls, C: None)


def _no_gradient(bo: object) -> None:
    def refine(self, U0, floats, acq, **kw):
        value = acq.value
        return np.vstack([self._local_search(u, float(value(u[None])[0]), value, 0) for u in U0])

    bo.BOStrategy._gradient_refine = refine


PATCHES: dict[str, Callable[[object], None] | None] = {
    "bo": None, "front-ref": _front_ref, "worst-ref": _worst_ref, "range-ref": _range_ref,
    "observed-near": _observed_near, "exact-front": _exact_front, "tail-credit": _tail_credit,
    "lcb-pool": _lcb_pool, "no-cheap-inputs": _no_cheap_inputs, "no-gradient": _no_gradient, "initial-20": None,
}


class _Modules:
    """bo.py and its acquisition, nehvi.py, as the one namespace the patches edit: a name is read from
    and written to the module whose code looks it up (bo.py for BOStrategy and _NEHVI, nehvi.py for
    the reference points, the clamp and _CheapScale)."""

    def __init__(self) -> None:
        from nago_spec.strategies import bo, nehvi

        object.__setattr__(self, "_modules", (bo, nehvi))

    def _home(self, name: str):
        bo, nehvi = self._modules
        return bo if name in ("BOStrategy", "_NEHVI") else nehvi

    def __getattr__(self, name: str):
        return getattr(self._home(name), name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._home(name), name, value)


def run(variant: str, problem: str, seed: int, evals: int) -> tuple[float, float]:
    """(hypervolume / true front's, seconds) of one variant on one problem and seed."""
    torch.set_num_threads(1)
    patch = PATCHES[variant]
    if patch is not None:
        patch(_Modules())
    bench = optimisers.PROBLEMS[problem]
    task = optimisers.Task.load(bench, seed, evals, 20 if variant == "initial-20" else 10)
    start = time.perf_counter()
    with optimisers.quiet_libraries():
        F = optimisers.run_ours("bo", task)
    seconds = time.perf_counter() - start
    return hypervolume(F, task.ref) / optimisers.true_front_hv(problem, task.ref), seconds


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(PATCHES))
    ap.add_argument("--problems", default=",".join(PROBLEMS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--evals", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args(argv)
    variants, problems = args.variants.split(","), args.problems.split(",")
    bad = [v for v in variants if v not in PATCHES] + [p for p in problems if p not in optimisers.PROBLEMS]
    if bad:
        ap.error(f"unknown variant or problem {bad}")
    work = [(v, p, s) for p in problems for v in variants for s in range(args.seeds)]
    import multiprocessing

    # a fresh process per run, so one variant's patch never leaks into another's
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
        results = list(pool.map(run, *zip(*work), [args.evals] * len(work)))
    table: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for (v, p, _), r in zip(work, results):
        table.setdefault((v, p), []).append(r)
    print(f"# bo ablation: hypervolume / true front's, mean over seeds 0..{args.seeds - 1}, {args.evals} evaluations, "
          "batch 1")
    print()
    print("| variant | " + " | ".join(problems) + " | mean | s / run |")
    print("|---|" + "---|" * (len(problems) + 2))
    for v in variants:
        cells = [statistics.fmean(h for h, _ in table[(v, p)]) for p in problems]
        secs = statistics.fmean(t for p in problems for _, t in table[(v, p)])
        print(f"| {v} | " + " | ".join(f"{c:.3f}" for c in cells) + f" | {statistics.fmean(cells):.3f} | {secs:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
