"""Spread of the networks one generator point samples, against the spread between generator points.

The NAGO paper (its Fig. 2) shows that architectures sampled from one generator perform alike while
different generators differ: that is what makes the generator's few parameters worth optimising.
This reads a finished run whose ``[train] samples_per_point`` is at least 2 (specs/10_generator_variance.toml:
10 random generator points x 4 architectures on Fashion-MNIST) and prints, per objective:

- within: the mean over generator points of the sample standard deviation of their architectures;
- between: the sample standard deviation of the generator points' means;
- the intraclass correlation ICC(1) of a one-way random-effects ANOVA: the share of the total variance
  that lies between generator points (1: the generator decides everything; 0: it decides nothing);

and draws every architecture as a dot, one colour per generator point, with the points' means.

    python benchmarks/generator_variance.py RUN_DIR [--png docs/generator_variance.png]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

from nago_spec.store import Store, TrialState


def icc1(groups: list[list[float]]) -> float:
    """ICC(1) of equal-sized groups: (MSB - MSW) / (MSB + (k - 1) MSW), k the group size."""
    k = len(groups[0])
    means = np.array([np.mean(g) for g in groups])
    grand = float(np.mean(means))
    msb = k * float(np.sum((means - grand) ** 2)) / (len(groups) - 1)
    msw = float(sum(np.sum((np.asarray(g) - np.mean(g)) ** 2) for g in groups)) / (len(groups) * (k - 1))
    denom = msb + (k - 1) * msw
    return (msb - msw) / denom if denom > 0 else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--png", type=Path, default=None, help="write the plot here")
    args = parser.parse_args()
    db = args.run_dir / "study.db"
    if not db.exists():
        print(f"{args.run_dir}: no study.db (run specs/10_generator_variance.toml first)", file=sys.stderr)
        return 2
    with Store(db) as store:
        trials = [t for t in store.trials() if t.state is TrialState.COMPLETE]
    points = [t for t in trials if len(t.samples) >= 2]
    if len(points) < 2:
        print(f"{args.run_dir}: needs >= 2 complete trials with samples_per_point >= 2", file=sys.stderr)
        return 2
    k = min(len(t.samples) for t in points)
    names = list(points[0].samples[0]["values"])
    print(f"{args.run_dir.name}: {len(points)} generator points x {k} architectures")
    print(f"{'objective':>10} {'within std':>11} {'between std':>12} {'between/within':>15} {'ICC(1)':>7}")
    for name in names:
        groups = [[s["values"][name] for s in t.samples[:k]] for t in points]
        within = statistics.mean(statistics.stdev(g) for g in groups)
        between = statistics.stdev(statistics.mean(g) for g in groups)
        print(f"{name:>10} {within:>11.4g} {between:>12.4g} {between / within:>14.1f}x {icc1(groups):>7.3f}")
    print("\nper generator point (trial): error mean ± std, params mean ± std")
    for t in points:
        e = [s["values"]["error"] for s in t.samples[:k]] if "error" in names else []
        p = [s["values"]["params"] for s in t.samples[:k]] if "params" in names else []
        print(f"  trial {t.id:>2}: error {np.mean(e):.4f} ± {np.std(e, ddof=1):.4f}, "
              f"params {np.mean(p):.0f} ± {np.std(p, ddof=1):.0f}" if e and p else f"  trial {t.id}")
    if args.png is not None and {"error", "params"} <= set(names):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        cmap = plt.get_cmap("tab10")
        for i, t in enumerate(points):
            e = [100 * s["values"]["error"] for s in t.samples[:k]]
            p = [s["values"]["params"] / 1000 for s in t.samples[:k]]
            ax.scatter(p, e, s=18, color=cmap(i % 10), alpha=0.7)
            ax.scatter([np.mean(p)], [np.mean(e)], s=90, marker="x", color=cmap(i % 10), label=f"trial {t.id}")
        ax.set_xlabel("parameters (thousands)")
        ax.set_ylabel("validation error (%)")
        ax.set_title(f"{len(points)} generator points x {k} sampled architectures (x: the point's mean)")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        args.png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png, dpi=120)
        print(f"\nplot: {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
