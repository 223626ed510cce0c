"""Final-train an exported network again, from its manifest, with its recipe changed or its channels scaled.

    python benchmarks/retrain_export.py MANIFEST [--model I] [--spec SPEC] [--seed N] [--param-budget N]
        [--epochs E] [--lr LR] [--cutout N] [--crop-padding N] [--flip] [--max-seconds S]

The network is model I (default 0) of an export's manifest.json: its generator point and seed, on the
data of the run's spec (default: the spec.toml of the run the manifest is in; ``--seed`` sets the spec's
seed, which draws the train/validation split, for a manifest kept without its run). Unchanged, it is
the export's final training, step for step, so its test accuracy is the manifest's. ``--param-budget``
samples the same graphs with the channels of another budget (default: the spec's [export].param_budget,
else the point's own); the others change [export]'s recipe
(a wider or longer training may need ``--max-seconds``: the spec's cap compresses its schedule).
Prints the network and the recipe, then its validation and test accuracy beside the manifest's.
docs/RESULTS.md §3 widened the most accurate networks of the lightweight search with it. One torch
thread, on the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--model", type=int, default=0, help="index in the manifest's models (default 0)")
    ap.add_argument("--spec", type=Path, help="the run's spec (default: MANIFEST/../../spec.toml)")
    ap.add_argument("--seed", type=int, help="the run's seed, where the spec is not the run's own")
    ap.add_argument("--param-budget", type=int, help="build the graphs at this param_budget's widths "
                    "(default: [export].param_budget, else the point's)")
    ap.add_argument("--epochs", type=float)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--cutout", type=int)
    ap.add_argument("--crop-padding", type=int)
    ap.add_argument("--flip", action="store_true")
    ap.add_argument("--max-seconds", type=float, help="the training's time cap (default [export].max_seconds; 0: none)")
    a = ap.parse_args(argv)

    import torch
    from torch import nn

    from nago_spec.errors import NagoError
    from nago_spec.network import Normalize, build_network
    from nago_spec.pipeline import DataShape, fit, sample_architecture
    from nago_spec.runners.worker import load_data
    from nago_spec.spec import load_spec
    from nago_spec.train import evaluate

    torch.set_num_threads(1)
    spec_path = a.spec or a.manifest.resolve().parent.parent / "spec.toml"
    try:
        models = json.loads(a.manifest.read_text())["models"]
        entry = models[a.model]
        spec = load_spec(spec_path)
    except (OSError, ValueError, KeyError, IndexError, NagoError) as exc:
        print(f"{a.manifest} (model {a.model}), spec {spec_path}: {exc}", file=sys.stderr)
        return 2
    if a.seed is not None:
        spec = dataclasses.replace(spec, seed=a.seed)
    seed = entry["seed"]
    data = load_data(spec, full=spec.export.full_data)
    budget = spec.export.param_budget if a.param_budget is None else a.param_budget
    arch = sample_architecture(spec, entry["generator_params"], seed, DataShape.of(data), budget)
    model = nn.Sequential(Normalize(data.mean, data.std), build_network(arch, seed))
    n = sum(p.numel() for p in model.parameters())
    if a.param_budget is None and n != entry["params"]:
        print(f"{spec_path} rebuilds model {a.model} with {n:,} params, not the manifest's {entry['params']:,}: "
              "give the run's spec (--spec) and seed (--seed)", file=sys.stderr)
        return 2
    changes = {"epochs": a.epochs, "lr": a.lr, "cutout": a.cutout, "crop_padding": a.crop_padding,
               "flip": a.flip or None}
    t = dataclasses.replace(spec.final_train(), **{k: v for k, v in changes.items() if v is not None})
    if a.max_seconds is not None:
        t = dataclasses.replace(t, max_seconds=a.max_seconds or None)
    print(f"trial {entry['trial']} sample {entry['sample']}: {n:,} params (exported {entry['params']:,}), "
          f"stage channels {arch.stage_channels}; {t.epochs:g} epochs at lr {t.lr:g}, weight decay "
          f"{t.weight_decay:g}, cutout {t.cutout}, crop padding {t.crop_padding}, flip {str(t.flip).lower()}"
          + ("" if t.max_seconds is None else f", capped at {t.max_seconds:g} s ([export].max_seconds)")
          + f"; {len(data.y_train):,} training images", flush=True)
    start = time.perf_counter()
    result = fit(model, data, t, seed)
    test_accuracy, _ = evaluate(model, data.x_test, data.y_test)
    m = entry["metrics"]
    print(f"val accuracy {result.val_accuracy:.4f}, test accuracy {test_accuracy:.4f} (exported: "
          f"{m['val_accuracy']:.4f}, {m['test_accuracy']:.4f}), {result.epochs:g} epochs in "
          f"{time.perf_counter() - start:.0f} s" + ("" if result.restarted_at is None else
                                                   f"; died, restarted at step {result.restarted_at}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
