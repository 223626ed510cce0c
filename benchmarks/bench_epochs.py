"""Validation accuracy of one ~50k-parameter sampled architecture on Fashion-MNIST after E epochs.

The architecture is the middle point (u = 0.5 in every dimension) of specs/02_fashion_mnist.toml's
generator space: 56 convolutions, 50.4k parameters. It is trained from scratch for each budget
(the cosine schedule spans the budget, as in a search trial) on the full training split less a
seeded, stratified 10 % validation split (54000 / 6000), one torch thread, and scored on the
validation split; ``--test`` also scores the untouched test split.

Recipes:
- ``search``: the spec's [train] (SGD + Nesterov, lr 0.1, batch 128, no augmentation);
- ``final``: that plus 1 warm-up epoch, label smoothing 0.1, random crop (padding 2) and flip.

    python benchmarks/bench_epochs.py [--epochs 1 3 10] [--recipe search|final] [--test]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nago_spec.data import load_dataset
from nago_spec.network import Normalize, build_network
from nago_spec.pipeline import DataShape, Evaluator, fit, sample_architecture
from nago_spec.spec import load_spec
from nago_spec.train import evaluate
from nago_spec.runners.worker import init_worker

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "02_fashion_mnist.toml"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fashion-mnist"
RECIPES = {
    "search": {},
    "final": {"warmup_epochs": 1.0, "label_smoothing": 0.1, "crop_padding": 2, "flip": True},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a directory of Fashion-MNIST IDX files")
    parser.add_argument("--epochs", type=float, nargs="+", default=[1, 3, 10])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="search")
    parser.add_argument("--test", action="store_true", help="also score the test split")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"Fashion-MNIST not found at {args.data}; pass --data DIR (the four IDX files)", file=sys.stderr)
        return 2
    init_worker()
    spec = load_spec(SPEC)
    data = load_dataset("idx", args.data, val_fraction=0.1, seed=0)
    shape = DataShape.of(data)
    space = Evaluator(spec).problem(shape).space
    arch = sample_architecture(spec, space.from_unit(np.full(space.dim, 0.5)), 1, shape)
    recipe = dataclasses.replace(spec.train, **RECIPES[args.recipe])
    print(f"{data!r}; architecture u=0.5, {arch.param_count()} params; recipe {args.recipe}: "
          f"{recipe.optimizer} lr {recipe.lr:g}, batch {recipe.batch_size}, warm-up {recipe.warmup_epochs:g}, "
          f"label smoothing {recipe.label_smoothing:g}, crop {recipe.crop_padding}, flip {recipe.flip}")
    for epochs in args.epochs:
        torch.manual_seed(0)
        model = nn.Sequential(Normalize(data.mean, data.std), build_network(arch, 1))
        start = time.perf_counter()
        r = fit(model, data, dataclasses.replace(recipe, epochs=epochs, max_seconds=None), seed=1)
        line = (f"epochs {epochs:>4g}: val accuracy {100 * r.val_accuracy:6.2f} %, val loss {r.val_loss:.4f}, "
                f"{r.images_per_second:.0f} images/s, {time.perf_counter() - start:.0f} s")
        if args.test:
            acc, _ = evaluate(model, data.x_test, data.y_test)
            line += f", test accuracy {100 * acc:6.2f} %"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
