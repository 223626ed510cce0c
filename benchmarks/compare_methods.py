"""Strategies and spaces compared at an equal evaluation budget (docs/RESULTS.md, experiments 1 and 2).

Each method is a spec run with one strategy, for every seed:

- ``hnag-bo``, ``hnag-random``, ``hnag-evolution``: specs/12_fashion_methods.toml (the NAGO space on a
  Fashion-MNIST subsample) with strategy bo, random and evolution (parents ``--pop-size``, since a
  20-trial budget leaves the default 20 parents no generation to select);
- ``rnag-bo``: specs/13_fashion_rnag.toml (the RandWire space, same data, training and budget) with bo;
- ``hnag-sep-bo``, ``hnag-mixed-bo``: specs/12 with bo and ``conv_type = "separable"`` (RandWire's own
  op, ReLU-separable 3x3-BN) or ``["normal", "separable"]`` searched: HNAG against RNAG on equal ops.

Both specs record every trial's test error (``[search].record``), which no strategy sees. A run's
front is chosen as a user would choose it, on validation error and parameters; the score is the
hypervolume of that front's (test error, parameters), normalised in one box spanning every trial of
every run, so the numbers compare across methods and seeds. The table gives mean ± std over the seeds;
``--png-fronts`` draws each method's fronts on one figure and ``--png-hv`` the hypervolume against
evaluations.

    python benchmarks/compare_methods.py [--seeds 3] [--seeds-of rnag-bo=2] [--out runs/compare] [--methods hnag-bo,rnag-bo]
        [--png-fronts docs/methods_fronts.png] [--png-hv docs/methods_hv.png] [--json results.json]
        [--bo-option scalarise_every=2 ...]

Runs already finished in ``--out`` are resumed (read back), not repeated.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nago_spec.errors import SpecError
from nago_spec.pareto import hypervolume, non_dominated
from nago_spec.spec import load_spec
from nago_spec.store import Store, TrialState
from nago_spec.runners.run import RunOptions, run

ROOT = Path(__file__).resolve().parents[1]
METHODS = {  # name: (spec, strategy, conv_type line for [space] or None)
    "hnag-bo": ("specs/12_fashion_methods.toml", "bo", None),
    "hnag-random": ("specs/12_fashion_methods.toml", "random", None),
    "hnag-evolution": ("specs/12_fashion_methods.toml", "evolution", None),
    "rnag-bo": ("specs/13_fashion_rnag.toml", "bo", None),
    # HNAG with RandWire's own op (ReLU, separable 3x3, BN), and with the op searched between both:
    # the fair side of experiment 2, since RNAG's nodes are separable convs and HNAG's default are not
    "hnag-sep-bo": ("specs/12_fashion_methods.toml", "bo", 'conv_type = "separable"'),
    "hnag-mixed-bo": ("specs/12_fashion_methods.toml", "bo", 'conv_type = ["normal", "separable"]'),
}


def method_spec(method: str, where: Path, pop_size: int, data: Path | None, bo_options: Sequence[str] = ()) -> Path:
    """A copy of the method's spec with its strategy, the data path made absolute (or ``data``), and for
    the bo methods the ``bo_options`` lines (``KEY = VALUE``, TOML) as its ``[search.options]``."""
    source, strategy, conv_type = METHODS[method]
    source = ROOT / source
    spec = load_spec(source)
    text = source.read_text()
    text = re.sub(r'(?m)^strategy = ".*"', f'strategy = "{strategy}"', text)
    text = re.sub(r'(?m)^path = ".*"', f'path = "{(data or spec.data.path).resolve()}"', text)
    if conv_type:
        text = text.replace("\n[space]\n", f"\n[space]\n{conv_type}\n")
    options = [f"pop_size = {pop_size}"] if strategy == "evolution" else list(bo_options) if strategy == "bo" else []
    if options:
        text = text.replace("\n[run]\n", "\n[search.options]\n" + "\n".join(options) + "\n\n[run]\n")
    path = where / f"{method}.toml"
    path.write_text(text)
    return path


def scored(trials) -> tuple[np.ndarray, np.ndarray]:
    """(val error, params) and (test error, params) of the complete trials, in trial order."""
    done = sorted((t for t in trials if t.state is TrialState.COMPLETE), key=lambda t: t.id)
    val = np.array([[t.values["error"], t.values["params"]] for t in done]).reshape(-1, 2)
    test = np.array([[t.values["test_error"], t.values["params"]] for t in done]).reshape(-1, 2)
    return val, test


def chosen_front(val: np.ndarray, test: np.ndarray) -> np.ndarray:
    """The (test error, params) of the points non-dominated on (val error, params)."""
    return test[non_dominated(val)] if len(val) else test


def summarise(runs: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]], walls: dict[tuple[str, int], float],
              failed: dict[tuple[str, int], int], methods: list[str], seeds: dict[str, int],
              earlier: dict | None = None) -> dict:
    """The --json result: per method, each seed's hypervolume of its validation-chosen front's (test error,
    params), normalised in one box spanning every trial of ``runs`` ((val, test) per (method, seed)),
    and the front's most accurate network.

    ``earlier`` is an earlier result: its box joins this one (it spans the trials of its runs), and its
    methods' stored fronts are scored in the joint box, so runs of another session or code version
    compare without being repeated. Their validation hypervolume and curves need every trial, which
    the result does not keep: they are None and left out.
    """
    every = np.vstack([np.vstack([v, t]) for v, t in runs.values() if len(v)])
    ideal, worst = every.min(axis=0), every.max(axis=0)
    if earlier is not None:
        ideal = np.minimum(ideal, earlier["box"]["ideal"])
        worst = np.maximum(worst, earlier["box"]["worst"])
    scale = np.where(worst > ideal, worst - ideal, 1.0) * 1.1

    def hv(F: np.ndarray) -> float:
        return hypervolume((F[non_dominated(F)] - ideal) / scale, np.ones(2)) if len(F) else 0.0

    result: dict = {"methods": {}, "seeds": dict(seeds), "box": {"ideal": ideal.tolist(), "worst": worst.tolist()}}
    for method in methods:
        keys = [(method, s) for s in range(seeds[method])]
        curves = {k: [hv(chosen_front(v[:n], t[:n])) for n in range(1, len(v) + 1)]
                  for k, (v, t) in ((k, runs[k]) for k in keys)}
        # the most accurate network of each chosen front (test error, params): what a user deploys
        # when accuracy comes first, so "bo finds better networks, not only smaller ones" is measured here
        fronts = [chosen_front(*runs[k]) for k in keys]
        result["methods"][method] = {
            "test_hv": [curves[k][-1] for k in keys], "val_hv": [hv(runs[k][0]) for k in keys],
            "best_test_error": [float(runs[k][1][:, 0].min()) for k in keys],
            "front_top": [F[np.argmin(F[:, 0])].tolist() for F in fronts],
            "wall_s": [walls[k] for k in keys], "failed": [failed[k] for k in keys],
            "front": {str(s): F.tolist() for s, F in enumerate(fronts)},
            "curve": {str(s): curves[method, s] for s in range(seeds[method])},
        }
    for method, old in (earlier or {}).get("methods", {}).items():
        label = f"{method} (earlier)" if method in methods else method
        fronts = [np.array(old["front"][str(s)]).reshape(-1, 2) for s in range(len(old["test_hv"]))]
        result["seeds"][label] = len(fronts)
        result["methods"][label] = {
            **{k: old[k] for k in ("best_test_error", "front_top", "wall_s", "failed") if k in old},
            "test_hv": [hv(F) for F in fronts], "val_hv": [None] * len(fronts),
            "front": {str(s): F.tolist() for s, F in enumerate(fronts)}, "curve": None,
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seeds-of", default="", metavar="METHOD=N,...",
                        help="fewer seeds for some methods (runs go seed by seed, so the shared seeds come first)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--pop-size", type=int, default=8, help="evolution's parents")
    parser.add_argument("--data", type=Path, default=None, help="Fashion-MNIST IDX folder (default: the specs' path)")
    parser.add_argument("--out", type=Path, default=None, help="keep (and resume) the run directories here")
    parser.add_argument("--png-fronts", type=Path, default=None)
    parser.add_argument("--png-hv", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--earlier", type=Path, default=None, metavar="JSON",
                        help="an earlier --json: its methods' fronts are scored in one box with these runs "
                             "(a method also run now is labelled 'METHOD (earlier)')")
    parser.add_argument("--bo-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of bo ([search.options], README) for the bo methods, VALUE in TOML; "
                             "repeatable. Runs already in --out are read back as they are: give a fresh --out")
    args = parser.parse_args()
    bo_options = []
    for item in args.bo_option:
        key, eq, value = (x.strip() for x in item.partition("="))
        try:
            tomllib.loads(f"{key} = {value}")
        except tomllib.TOMLDecodeError:
            eq = ""
        if not (key and eq):
            print(f"--bo-option {item!r}: give KEY=VALUE with a TOML value, as in scalarise_every=2", file=sys.stderr)
            return 2
        bo_options.append(f"{key} = {value}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(METHODS)}", file=sys.stderr)
        return 2
    seeds = {m: args.seeds for m in methods}
    for item in filter(None, (x.strip() for x in args.seeds_of.split(","))):
        name, _, n = item.partition("=")
        if name not in seeds or not n.isdigit() or not 1 <= int(n) <= args.seeds:
            print(f"--seeds-of {item!r}: give METHOD=N with a method of --methods and 1 <= N <= --seeds",
                  file=sys.stderr)
            return 2
        seeds[name] = int(n)
    data = args.data or load_spec(ROOT / METHODS[methods[0]][0]).data.path
    if not Path(data).is_dir():
        print(f"Fashion-MNIST not found at {data}; pass --data DIR (the four IDX files)", file=sys.stderr)
        return 2
    where = args.out or Path(tempfile.mkdtemp(prefix="compare_methods_"))
    where.mkdir(parents=True, exist_ok=True)
    for method in methods:  # a bad --bo-option stops here, before any run; the spec's error names the key
        try:
            load_spec(method_spec(method, where, args.pop_size, args.data, bo_options))
        except SpecError as exc:
            print(exc, file=sys.stderr)
            return 2
    runs: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    walls: dict[tuple[str, int], float] = {}
    failed: dict[tuple[str, int], int] = {}  # trials FAILED (networks that did not learn, ...)
    for seed in range(args.seeds):
        for method in (m for m in methods if seed < seeds[m]):
            spec = method_spec(method, where, args.pop_size, args.data, bo_options)
            run_dir = run(spec, RunOptions(out=where / f"{method}-{seed}", seed=seed, mode="quiet"))
            with Store(run_dir / "study.db") as store:
                trials = store.trials()
            runs[method, seed] = scored(trials)
            done = [t for t in trials if t.state is TrialState.COMPLETE]
            failed[method, seed] = sum(t.state is TrialState.FAILED for t in trials)
            # the search's wall time, first start to last finish (also for a run read back)
            walls[method, seed] = max(t.finished for t in done) - min(t.started for t in done)
            print(f"{method:>15} seed {seed}: {len(done)}/{len(trials)} complete, {walls[method, seed]:.0f} s",
                  flush=True)

    earlier = json.loads(args.earlier.read_text()) if args.earlier else None
    result = summarise(runs, walls, failed, methods, seeds, earlier)
    labels = list(result["methods"])
    print(f"\nhypervolume of the validation-chosen front's (test error, params), one box over {len(runs)} runs"
          + (f" and {args.earlier}'s fronts" if earlier else ""))
    print(f"{'method':>24} {'test hv':>17} {'val hv':>17} {'best test err':>14} {'front best':>11} {'front':>6} "
          f"{'median wall s':>14}")
    for label in labels:
        r = result["methods"][label]

        def ms(x: list[float]) -> str:
            if any(v is None for v in x):
                return f"{'-':>17}"
            return f"{statistics.mean(x):>9.4f} ± {statistics.stdev(x) if len(x) > 1 else 0.0:.4f}"

        size = statistics.mean(len(F) for F in r["front"].values())
        top = statistics.mean(t[0] for t in r["front_top"])
        print(f"{label:>24} {ms(r['test_hv'])} {ms(r['val_hv'])} {statistics.mean(r['best_test_error']):>14.4f} "
              f"{top:>11.4f} {size:>6.1f} {statistics.median(r['wall_s']):>14.0f}")
    print("\nper seed: test hv, and the most accurate network of the chosen front (test error, params)")
    for seed in range(max(len(r["test_hv"]) for r in result["methods"].values())):
        cells = [f"{label} {r['test_hv'][seed]:.4f} ({r['front_top'][seed][0]:.4f}, {r['front_top'][seed][1]:.0f})"
                 for label, r in result["methods"].items() if seed < len(r["test_hv"])]
        print(f"seed {seed}: " + "; ".join(cells))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.png_fronts or args.png_hv:
        plot(result, labels, args)
    print(f"\nruns kept in {where}")
    return 0


def plot(result: dict, methods: list[str], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    if args.png_fronts:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for m in methods:
            for s, F in result["methods"][m]["front"].items():
                F = np.array(F)
                F = F[np.argsort(F[:, 1])]
                ax.step(F[:, 1], 100 * F[:, 0], where="post", color=colours[m], alpha=0.7,
                        label=m if s == "0" else None)
                ax.scatter(F[:, 1], 100 * F[:, 0], color=colours[m], s=14)
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("test error (%)")
        ax.set_title("validation-chosen fronts on the test set, every seed of each method")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.png_fronts, dpi=120)
        plt.close(fig)
    if args.png_hv:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for m in methods:
            if not result["methods"][m]["curve"]:
                continue  # an earlier result's method: its curves were scored in another box
            curves = list(result["methods"][m]["curve"].values())
            n = min(len(c) for c in curves)
            C = np.array([c[:n] for c in curves])
            x = np.arange(1, n + 1)
            ax.plot(x, C.mean(axis=0), color=colours[m], label=m)
            ax.fill_between(x, C.min(axis=0), C.max(axis=0), color=colours[m], alpha=0.15)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("evaluations")
        ax.set_ylabel("hypervolume (test error, params)")
        ax.set_title("mean and range over each method's seeds")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.png_hv, dpi=120)
        plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
