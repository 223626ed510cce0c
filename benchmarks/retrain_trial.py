"""Train one trial of a run again, as its search trained it (or as its final training would), with the
warm-up, rate or epochs changed, and print the mean training loss of every tenth of the steps, so a
network that dies shows where (a restarted training's steps count on from the dead attempt's).
docs/RESULTS.md §3 measured the restart of nago_spec.train with it.

    python benchmarks/retrain_trial.py RUN_DIR TRIAL [--final] [--warmup E] [--lr LR] [--epochs E] [--no-restart]

The architecture is sample 0 of the trial's point, seeded as the search seeded it, on the run's data
(the search's split; --final: [export]'s settings). --no-restart trains without the restart of a dead
training, as nago-spec did before it. One torch thread, on the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("trial", type=int)
    ap.add_argument("--final", action="store_true", help="[export]'s training, not the search's")
    ap.add_argument("--warmup", type=float, help="warm-up epochs")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--epochs", type=float)
    ap.add_argument("--no-restart", action="store_true", help="no restart of a training that died")
    a = ap.parse_args(argv)

    import nago_spec.train as train_module
    from nago_spec.network import Normalize, build_network
    from nago_spec.pipeline import DataShape, fit, sample_architecture
    from nago_spec.runners.worker import load_data
    from nago_spec.seeds import sample_seed
    from nago_spec.spec import load_spec
    from nago_spec.store import Store

    torch.set_num_threads(1)
    spec = load_spec(a.run / "spec.toml")
    trials = {t.id: t for t in Store(a.run / "study.db", readonly=True).trials()}
    if a.trial not in trials:
        print(f"{a.run}: no trial {a.trial}", file=sys.stderr)
        return 2
    data = load_data(spec)
    seed = sample_seed(spec.seed, a.trial, 0)
    arch = sample_architecture(spec, trials[a.trial].params, seed, DataShape.of(data))
    model = nn.Sequential(Normalize(data.mean, data.std), build_network(arch, seed))
    t = spec.final_train() if a.final else spec.train
    changes = {"warmup_epochs": a.warmup, "lr": a.lr, "epochs": a.epochs}
    t = dataclasses.replace(t, **{k: v for k, v in changes.items() if v is not None})
    print(f"trial {a.trial}: {sum(p.numel() for p in model.parameters()):,} params, stage channels "
          f"{arch.stage_channels}; {t.epochs:g} epochs at lr {t.lr:g}, warm-up {t.warmup_epochs:g} epochs"
          f"{', no restart' if a.no_restart else ''}")

    steps = math.ceil(max(1, len(data.y_train) // t.batch_size) * t.epochs)
    tenth = max(1, steps // 10)
    losses: list[float] = []
    cross_entropy = train_module.F.cross_entropy

    def logged(*args, **kwargs):  # the training loss of every step; validation's sums are not logged
        loss = cross_entropy(*args, **kwargs)
        if kwargs.get("reduction", "mean") != "mean":
            return loss
        losses.append(loss.item())
        if len(losses) % tenth == 0:
            window = losses[-tenth:]
            print(f"  step {len(losses)}: mean loss of the last {tenth} steps {sum(window) / tenth:.4f}")
        return loss

    has_died = train_module._has_died
    train_module.F.cross_entropy = logged
    if a.no_restart:
        train_module._has_died = lambda losses, floor: False
    try:
        start = time.perf_counter()
        result = fit(model, data, t, seed)
    finally:
        train_module.F.cross_entropy, train_module._has_died = cross_entropy, has_died
    test_accuracy, test_loss = train_module.evaluate(model, data.x_test, data.y_test)
    died = "" if result.restarted_at is None else f"; died, restarted at step {result.restarted_at}"
    print(f"val accuracy {result.val_accuracy:.4f}, test accuracy {test_accuracy:.4f} (loss {test_loss:.4f}), "
          f"{result.epochs:g} epochs in {time.perf_counter() - start:.0f} s{died}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
