"""The finally trained front of one or more runs against an accuracy bar (docs/RESULTS.md, experiment 3).

Reads RUN_DIR/models/manifest.json (written by ``nago run`` / ``nago export``) of each run and prints
one row per exported model: parameters, the search's validation error, the final validation and test
accuracy, the final training's epochs and seconds, and the ONNX latency. ``--bar`` (a test accuracy,
e.g. 0.925) marks which models beat it, among those within ``--max-params``; ``--hand`` sets the
models of all the runs against the hand-designed networks of the Fashion-MNIST benchmark table that
state their size (HAND_DESIGNED): for each, our smallest model at least as accurate; ``--png`` draws
test accuracy against parameters, each run in its colour, with the bar and (``--hand``) those networks.

    python benchmarks/final_front.py runs/fashion-lightweight --bar 0.925 --max-params 100000 \
        --png docs/lightweight_front.png
    python benchmarks/final_front.py runs/light-s0 runs/light-s0-long runs/light-s1 --bar 0.935 --hand
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np


# The entries of the benchmark table in zalandoresearch/fashion-mnist's README ("Benchmark") that give
# a parameter count: (name as listed, parameters, Fashion test accuracy, the submitter's preprocessing).
# "<100K" is drawn at 100k, its upper bound. MobileNet and the others name no size and are left out.
HAND_DESIGNED = (
    ("2 Conv Layers net <100K parameters", 100_000, 0.925, "none"),
    ("2 Conv Layers 113K parameters", 113_000, 0.922, "normalization"),
    ("DenseNet-BC 768K params", 768_000, 0.954, "mean/std, random crops and flips"),
    ("2 Conv Layers with 3 FC 1.8M parameters", 1_800_000, 0.932, "normalization"),
    ("Capsule Network 8M parameters", 8_000_000, 0.936, "normalization, shifts, flips"),
    ("WRN40-4 8.9M params", 8_900_000, 0.967, "mean/std, random crops and flips"),
    ("VGG16 26M parameters", 26_000_000, 0.935, "none"),
)


def against_hand(table: list[dict]) -> list[tuple[tuple, dict | None]]:
    """For each HAND_DESIGNED entry, our smallest model at least as accurate on test (None: none is)."""
    out = []
    for entry in HAND_DESIGNED:
        match = [r for r in table if r["test_accuracy"] >= entry[2]]
        out.append((entry, min(match, key=lambda r: (r["params"], -r["test_accuracy"])) if match else None))
    return out


def rows(manifest: dict) -> list[dict]:
    """One dict per exported model, smallest first."""
    out = []
    for m in manifest["models"]:
        lat = ((m.get("latency_ms") or {}).get("batch_1") or {}).get("onnxruntime")
        out.append({
            "trial": m["trial"], "params": int(m["params"]), "search_error": m.get("objectives", {}).get("error"),
            "val_accuracy": m["metrics"]["val_accuracy"], "test_accuracy": m["metrics"]["test_accuracy"],
            "epochs": m["metrics"]["final_epochs"], "seconds": m["metrics"]["train_seconds"], "latency_ms": lat,
        })
    return sorted(out, key=lambda r: r["params"])


def front(table: list[dict]) -> list[dict]:
    """The models no other model beats on both test accuracy and parameters."""
    return [r for r in table if not any(
        o["params"] <= r["params"] and o["test_accuracy"] >= r["test_accuracy"]
        and (o["params"], o["test_accuracy"]) != (r["params"], r["test_accuracy"]) for o in table)]


def _name(r: dict) -> str:
    return f"{r['run']} trial {r['trial']}" if "run" in r else f"trial {r['trial']}"


def print_bar(table: list[dict], bar: float, max_params: int | None) -> None:
    """How many models within ``max_params`` beat ``bar``, the smallest of them, and the most accurate."""
    within = [r for r in table if max_params is None or r["params"] <= max_params]
    beat = [r for r in within if r["test_accuracy"] > bar]
    limit = f" with <= {max_params:,} params" if max_params else ""
    if beat:
        best = min(beat, key=lambda r: r["params"])
        print(f"{len(beat)} model(s){limit} beat {100 * bar:.2f} % test accuracy; the smallest: {_name(best)}, "
              f"{best['params']:,} params, {100 * best['test_accuracy']:.2f} %")
    else:
        print(f"no model{limit} beats {100 * bar:.2f} % test accuracy")
    if within:
        top = max(within, key=lambda r: (r["test_accuracy"], -r["params"]))
        print(f"the most accurate{limit}: {_name(top)}, {top['params']:,} params, "
              f"{100 * top['test_accuracy']:.2f} %")


def report(manifest: dict, bar: float | None, max_params: int | None) -> None:
    """One run's models as a markdown table, the bar, and the quantised twins where there are any."""
    table = rows(manifest)
    on_front = {id(r) for r in front(table)}
    print("| trial | params | search val error | final val acc | final test acc | epochs | train s | ORT ms (b=1) | front |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in table:
        lat = "" if r["latency_ms"] is None else f"{r['latency_ms']:.2f}"
        err = "" if r["search_error"] is None else f"{r['search_error']:.4f}"
        print(f"| {r['trial']} | {r['params']:,} | {err} | {100 * r['val_accuracy']:.2f} % | "
              f"{100 * r['test_accuracy']:.2f} % | {r['epochs']:g} | {r['seconds']:.0f} | {lat} | "
              f"{'yes' if id(r) in on_front else ''} |")
    if bar is not None:
        print()
        print_bar(table, bar, max_params)
    twins = [(m, scheme, q) for m in sorted(manifest["models"], key=lambda m: m["params"])
             for scheme, q in (m.get("quantized") or {}).items()]
    if twins:
        print("\n| file | scheme | float32 test acc | test acc | kept | agreement | kB | size / float32 | "
              "ORT ms b1 (float32) | ORT ms b32 (float32) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for m, scheme, q in twins:
            if "error" in q:
                print(f"| {m['file']} | {scheme} | failed: {q['error'].splitlines()[0]} |||||||| |")
                continue
            lat = q.get("latency_ms") or {}
            kept = "" if q["kept"] is None else f"{100 * q['kept']:.1f} %"  # None: a parent of 0 % accuracy
            ms = {b: (f"{lat[b][scheme]:.3f} ({lat[b]['float32']:.3f})" if b in lat else "")
                  for b in ("batch_1", "batch_32")}
            print(f"| {q['file']} | {scheme} | {100 * q['float32_test_accuracy']:.2f} % | {100 * q['test_accuracy']:.2f} % | "
                  f"{kept} | {100 * q['agreement']:.1f} % | {q['size_bytes'] / 1000:.1f} | "
                  f"{q['size_ratio']:.2f} | {ms['batch_1']} | {ms['batch_32']} |")
        for scheme in sorted({s for _, s, _ in twins}):
            ok = [q for _, s, q in twins if s == scheme and "error" not in q]
            if not ok:
                continue
            faster = sum(q["latency_ms"]["batch_1"][scheme] <= q["latency_ms"]["batch_1"]["float32"]
                         for q in ok if q.get("latency_ms"))
            kept = statistics.median(q["kept"] or 0.0 for q in ok)
            print(f"\n{scheme}, median over {len(ok)} model(s): kept {100 * kept:.1f} % "
                  f"of the float32 test accuracy, size {statistics.median(q['size_ratio'] for q in ok):.2f} x float32, "
                  f"no slower than float32 at batch 1 for {faster} of {len(ok)}")
    if failed := manifest.get("failed"):
        print(f"{len(failed)} final training(s) failed: {failed}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="run_dir")
    parser.add_argument("--bar", type=float, default=None, help="test accuracy to beat, e.g. 0.925")
    parser.add_argument("--max-params", type=int, default=None)
    parser.add_argument("--hand", action="store_true", help="compare with the benchmark table's hand-designed networks")
    parser.add_argument("--png", type=Path, default=None)
    args = parser.parse_args()
    runs = []
    for run_dir in args.run_dirs:
        path = run_dir / "models" / "manifest.json"
        if not path.is_file():
            print(f"{path} not found: run `nago run` (with [export]) or `nago export` first", file=sys.stderr)
            return 2
        runs.append((run_dir, json.loads(path.read_text())))
    for run_dir, manifest in runs:
        if len(runs) > 1:
            print(f"\n{run_dir}\n")
        report(manifest, args.bar, args.max_params)
    # with several runs a model is named by its run too (_name)
    table = [{**r, "run": run_dir.name} if len(runs) > 1 else r for run_dir, manifest in runs for r in rows(manifest)]
    if len(runs) > 1 and args.bar is not None:
        print(f"\nall {len(runs)} runs:", end=" ")
        print_bar(table, args.bar, args.max_params)
    if args.hand:
        print("\n| hand-designed network (Fashion-MNIST benchmark table) | preprocessing | params | test acc | "
              "our smallest at least as accurate | params | test acc |")
        print("|---|---|---|---|---|---|---|")
        for (name, params, acc, prep), r in against_hand(table):
            ours = ("none", "", "") if r is None else (_name(r), f"{r['params']:,}",
                                                       f"{100 * r['test_accuracy']:.2f} %")
            print(f"| {name} | {prep} | {params:,} | {100 * acc:.1f} % | {ours[0]} | {ours[1]} | {ours[2]} |")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        for i, (run_dir, manifest) in enumerate(runs):
            mine = rows(manifest)
            label = run_dir.name if len(runs) > 1 else "final training, test"
            ax.scatter([r["params"] for r in mine], [100 * r["test_accuracy"] for r in mine],
                       color=f"C{i}", label=label)
            f = sorted(front(mine), key=lambda r: r["params"])
            ax.step([r["params"] for r in f], [100 * r["test_accuracy"] for r in f], where="post", color=f"C{i}")
        sx = [r["params"] for r in table if r["search_error"] is not None]
        sy = [100 * (1 - r["search_error"]) for r in table if r["search_error"] is not None]
        ax.scatter(sx, sy, color="0.6", marker="x", label="search (validation, 1 epoch)")
        if args.hand:
            hx, hy = [e[1] for e in HAND_DESIGNED], [100 * e[2] for e in HAND_DESIGNED]
            ax.scatter(hx, hy, color="k", marker="s", s=18, label="hand-designed (benchmark table)")
        if args.bar is not None:
            ax.axhline(100 * args.bar, color="C9", ls="--", label=f"bar {100 * args.bar:.1f} %")
        if args.max_params:
            ax.axvline(args.max_params, color="C9", ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)
        plt.close(fig)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
