"""Multi-fidelity bo against single-fidelity bo and random search at equal total training epochs.

Each method searches the same NAGO space on real Fashion-MNIST (a stratified subsample, two
objectives: validation error and parameters) for the same number of training epochs in all:

- ``bo``: ``budget`` trials of ``max`` epochs each (the NAGO paper's BO);
- ``bo-hyperband``: Hyperband brackets over ``min .. max`` epochs with eta = 2, the budget counted
  in full-budget equivalents, so at most the same epochs in all (BOHB's protocol);
- ``random``: ``budget`` random trials of ``max`` epochs.

The front of each run is that of its trials trained for ``max`` epochs (a low-budget error is not
comparable with a full one). Every hypervolume is normalised in one box spanning the points of
every run of the benchmark, so the numbers compare across methods and seeds; the table shows the
mean ± std over the seeds, the epochs actually spent, the trials at ``max`` and the wall time.

    python benchmarks/bench_fidelity.py [--seeds 3] [--budget 12] [--data ../shared/data/fashion-mnist]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nago_spec.pareto import hypervolume, non_dominated
from nago_spec.store import Store, TrialState
from nago_spec.runners.run import RunOptions, run

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fashion-mnist"

SPEC = """
version = 1
name = "{name}"
seed = {seed}

[data]
dataset = "idx"
path = "{data}"
val_fraction = 0.2
limit = {limit}

[space]
kind = "hnag"
param_budget = 20000
head_width = 64

[space.top]
graph = "ws"
nodes = [3, 8]
k = [2, 5]
p = [0.1, 0.9]

[space.mid]
graph = "er"
nodes = [1, 4]
p = [0.1, 0.9]

[space.bottom]
graph = "ws"
nodes = [3, 6]
k = [2, 5]
p = [0.1, 0.9]

[train]
epochs = {max_epochs}
batch_size = 128
lr = 0.1

[[objectives]]
name = "error"
[[objectives]]
name = "params"

[search]
strategy = "{strategy}"
budget = {budget}
initial = {initial}
batch = 2
{fidelity}
[run]
backend = "process"
workers = 2

[export]
onnx = false
"""

METHODS = ("bo-hyperband", "bo", "random")


def _spec(method: str, seed: int, args: argparse.Namespace, where: Path) -> Path:
    fidelity = (f"fidelity = {{ min = {args.min_epochs}, max = {args.max_epochs}, eta = 2 }}"
                if method == "bo-hyperband" else "")
    text = SPEC.format(name=f"{method}-{seed}", seed=seed, data=args.data.resolve(), limit=args.limit,
                       max_epochs=args.max_epochs, strategy="random" if method == "random" else "bo",
                       budget=args.budget, initial=args.initial, fidelity=fidelity)
    path = where / f"{method}-{seed}.toml"
    path.write_text(text)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a directory of Fashion-MNIST IDX files")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=12, help="trials at max epochs (full-budget equivalents)")
    parser.add_argument("--initial", type=int, default=6)
    parser.add_argument("--limit", type=int, default=6000, help="training images before the validation split")
    parser.add_argument("--min-epochs", type=float, default=0.5)
    parser.add_argument("--max-epochs", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=None, help="keep the run directories here")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"Fashion-MNIST not found at {args.data}; pass --data DIR (the four IDX files)", file=sys.stderr)
        return 2
    where = args.out or Path(tempfile.mkdtemp(prefix="bench_fidelity_"))
    where.mkdir(parents=True, exist_ok=True)
    fronts: dict[tuple[str, int], np.ndarray] = {}
    spent: dict[tuple[str, int], tuple[float, int, float]] = {}
    for seed in range(args.seeds):
        for method in METHODS:
            spec = _spec(method, seed, args, where)
            start = time.perf_counter()
            run_dir = run(spec, RunOptions(out=where / f"{method}-{seed}", mode="quiet"))
            wall = time.perf_counter() - start
            with Store(run_dir / "study.db") as store:
                trials = store.trials()
            full = [t for t in trials if t.state is TrialState.COMPLETE and (t.budget is None or t.budget == args.max_epochs)]
            epochs = sum(t.budget if t.budget is not None else args.max_epochs for t in trials)
            fronts[method, seed] = np.array([[t.values["error"], t.values["params"]] for t in full]).reshape(-1, 2)
            spent[method, seed] = (epochs, len(full), wall)
            print(f"{method:>13} seed {seed}: {len(trials)} trials, {len(full)} at {args.max_epochs:g} epochs, "
                  f"{epochs:g} epochs in all, {wall:.0f} s", flush=True)
    every = np.vstack([F for F in fronts.values() if len(F)])
    ideal, worst = every.min(axis=0), every.max(axis=0)
    scale = np.where(worst > ideal, worst - ideal, 1.0) * 1.1
    hv = {k: hypervolume((F[non_dominated(F)] - ideal) / scale, np.ones(2)) if len(F) else 0.0
          for k, F in fronts.items()}
    print(f"\nFashion-MNIST, {args.limit} images (80 % train), budget {args.budget} x {args.max_epochs:g} epochs, "
          f"{args.seeds} seeds; hypervolume of (val error, params) at {args.max_epochs:g} epochs in one box")
    print(f"{'method':>13} {'hypervolume':>17} {'epochs':>7} {'at max':>7} {'wall s':>7}")
    for method in METHODS:
        h = [hv[method, s] for s in range(args.seeds)]
        sd = statistics.stdev(h) if len(h) > 1 else 0.0
        e, n, w = (statistics.mean(spent[method, s][i] for s in range(args.seeds)) for i in range(3))
        print(f"{method:>13} {statistics.mean(h):>9.4f} ± {sd:.4f} {e:>7.1f} {n:>7.1f} {w:>7.0f}")
    print(f"\nruns kept in {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
