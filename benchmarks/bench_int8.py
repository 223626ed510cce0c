"""What the int8_error objective adds to a trial: Fashion-MNIST networks of specs/14_int8_fashion.toml
at three parameter budgets, each trained as a trial trains (one epoch on 54k images, one torch thread),
then measured by int8_error (TorchScript export, 512-image calibration, quantisation, one pass over the
6k validation images). Prints both times and their ratio per network, from the same run.

    python benchmarks/bench_int8.py [--budgets 5000,20000,80000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="5000,20000,80000")
    parser.add_argument("--spec", type=Path, default=ROOT / "specs" / "14_int8_fashion.toml")
    args = parser.parse_args()
    from nago_spec.errors import DataError
    from nago_spec.network import Normalize, build_network
    from nago_spec.pipeline import DataShape, Evaluator, fit, sample_architecture
    from nago_spec.quantize import int8_error
    from nago_spec.runners.worker import load_data
    from nago_spec.spec import load_spec
    from nago_spec.train import evaluate

    torch.set_num_threads(1)
    spec = load_spec(args.spec)
    try:
        data = load_data(spec)
    except DataError as exc:
        print(f"skipped: {exc} (the data lives in ../shared/data)", file=sys.stderr)
        return 2
    shape = DataShape.of(data)
    space = Evaluator(spec).problem(shape).space
    print("| param budget | params | train s (1 epoch) | val error | int8_error s | int8 val error | int8 s / train s |")
    print("|---|---|---|---|---|---|---|")
    for budget in (int(b) for b in args.budgets.split(",")):
        point = space.from_unit(np.full(space.dim, 0.5)) | {"param_budget": budget}
        arch = sample_architecture(spec, point, 0, shape)
        model = nn.Sequential(Normalize(data.mean, data.std), build_network(arch, 0))
        start = time.perf_counter()
        fit(model, data, spec.train, 0, "cpu")
        train_s = time.perf_counter() - start
        val_acc, _ = evaluate(model, data.x_val, data.y_val)
        start = time.perf_counter()
        q_err = int8_error(model, data.x_train, data.y_train, data.x_val, data.y_val, 0)
        q_s = time.perf_counter() - start
        print(f"| {budget:,} | {arch.param_count():,} | {train_s:.1f} | {1 - val_acc:.4f} | {q_s:.2f} | {q_err:.4f} | "
              f"{q_s / train_s:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
