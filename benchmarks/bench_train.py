"""Training throughput of nago_spec.train.train against a plain PyTorch loop over the same model.

Three architectures are sampled from specs/02_fashion_mnist.toml's generator space (the unit-cube
points 0.1, 0.5 and 0.9 in every dimension: few wide operations to many narrow ones, all near
the spec's 50k-parameter budget) and trained on real Fashion-MNIST (28x28x1) at batch 128, in a
training worker's setting (nago_spec.runners.worker.init_worker: one torch thread).

The reference is the loop a PyTorch user writes: the training images converted to float once,
a ``DataLoader(TensorDataset(x, y), shuffle=True, drop_last=True)`` without worker processes,
``SGD(model.parameters(), momentum=0.9, nesterov=True, weight_decay=5e-4)``, a per-step
``CosineAnnealingLR``, and ``zero_grad(); cross_entropy(model(x), y).backward(); step()``.
Ours is ``train()`` as a search trial calls it: the spec's [train] settings (uint8 batches sliced
from memory and converted per step, fused SGD, the NaN guard's sync, channels_last="auto"), timed
by its own ``images_per_second`` (the training loop, not the validation pass). A third column
forces ``channels_last=False`` to show what the automatic choice buys.

The runs alternate in rounds of ``--steps`` steps (ours, plain, ours without channels_last, ...);
each figure is the median over ``--rounds`` rounds, the ratio ours / plain from the same rounds.

    python benchmarks/bench_train.py [--data ../shared/data/fashion-mnist] [--steps 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nago_spec.data import Dataset, load_dataset
from nago_spec.network import Normalize, build_network
from nago_spec.pipeline import DataShape, Evaluator, fit, sample_architecture
from nago_spec.spec import load_spec
from nago_spec.train import wants_channels_last
from nago_spec.runners.worker import init_worker

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "02_fashion_mnist.toml"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fashion-mnist"
POINTS = {"few wide ops (u=0.1)": 0.1, "middle (u=0.5)": 0.5, "many narrow ops (u=0.9)": 0.9}


class PlainLoop:
    """The reference: a textbook PyTorch training loop, resumable round by round."""

    def __init__(self, model: nn.Module, data: Dataset, batch: int, lr: float, total_steps: int, seed: int):
        self.model = model
        torch.manual_seed(seed)
        dataset = TensorDataset(data.x_train.float(), data.y_train)
        self.loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True)
        self.batches = iter(self.loader)
        self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=total_steps)
        self.batch = batch

    def run(self, steps: int) -> float:
        """Train ``steps`` steps; images per second."""
        self.model.train()
        start = time.perf_counter()
        for _ in range(steps):
            try:
                x, y = next(self.batches)
            except StopIteration:
                self.batches = iter(self.loader)
                x, y = next(self.batches)
            self.opt.zero_grad()
            loss = F.cross_entropy(self.model(x), y)
            loss.backward()
            self.opt.step()
            self.sched.step()
        return steps * self.batch / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a directory of Fashion-MNIST IDX files")
    parser.add_argument("--steps", type=int, default=20, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"Fashion-MNIST not found at {args.data}; pass --data DIR (the four IDX files)", file=sys.stderr)
        return 2
    init_worker()
    spec = load_spec(SPEC)
    t = spec.train
    data = load_dataset("idx", args.data, val_fraction=0.1, seed=0)
    # A small validation split: train() scores it after each round, and that is not what is timed.
    data = dataclasses.replace(data, x_val=data.x_val[:256], y_val=data.y_val[:256])
    shape = DataShape.of(data)
    space = Evaluator(spec).problem(shape).space
    steps_per_epoch = len(data.y_train) // t.batch_size

    print(f"Fashion-MNIST {len(data.y_train)} training images, batch {t.batch_size}, 1 thread, "
          f"{args.rounds} rounds of {args.steps} steps; images/s, median of the rounds")
    header = (f"{'architecture':<26} {'params':>7} {'convs':>5} {'width':>5} {'auto':>5} {'plain':>7} "
              f"{'ours':>7} {'ours/plain':>10} {'no NHWC':>8} {'auto/no':>8}")
    print(header)
    print("-" * len(header))
    ratios = []
    for label, u in POINTS.items():
        params = space.from_unit(np.full(space.dim, u))
        arch = sample_architecture(spec, params, 1, shape)
        torch.manual_seed(0)
        model = nn.Sequential(Normalize(data.mean, data.std), build_network(arch, 1))
        ours, plain_model, flat = model, copy.deepcopy(model), copy.deepcopy(model)
        plain = PlainLoop(plain_model, data, t.batch_size, t.lr, args.steps * args.rounds, seed=0)
        epochs = args.steps / steps_per_epoch
        runs: dict[str, list[float]] = {"ours": [], "plain": [], "flat": []}
        for r in range(args.rounds + 1):  # round 0 warms up every path (allocator, oneDNN primitives)
            o = fit(ours, data, dataclasses.replace(t, epochs=epochs), seed=r).images_per_second
            p = plain.run(args.steps)
            f = fit(flat, data, dataclasses.replace(t, epochs=epochs, channels_last=False), seed=r).images_per_second
            if r:
                runs["ours"].append(o)
                runs["plain"].append(p)
                runs["flat"].append(f)
        med = {k: statistics.median(v) for k, v in runs.items()}
        ratio = statistics.median(o / p for o, p in zip(runs["ours"], runs["plain"]))
        ratios.append(ratio)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        print(f"{label:<26} {arch.param_count():>7} {len(convs):>5} {min(c.out_channels for c in convs):>5} "
              f"{'NHWC' if wants_channels_last(model) else 'NCHW':>5} {med['plain']:>7.0f} {med['ours']:>7.0f} "
              f"{ratio:>9.2f}x {med['flat']:>8.0f} {med['ours'] / med['flat']:>7.2f}x", flush=True)
    print(f"\nours / plain: min {min(ratios):.2f}x, geometric mean {statistics.geometric_mean(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
