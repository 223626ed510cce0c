"""The finally trained front of a run against an accuracy bar (docs/RESULTS.md, experiment 3).

Reads RUN_DIR/models/manifest.json (written by ``nago run`` / ``nago export``) and prints one row per
exported model: parameters, the search's validation error, the final validation and test accuracy,
the final training's epochs and seconds, and the ONNX latency. ``--bar`` (a test accuracy, e.g.
0.925) marks which models beat it, among those within ``--max-params``; ``--png`` draws test accuracy
against parameters with the bar.

    python benchmarks/final_front.py runs/fashion-lightweight --bar 0.925 --max-params 100000 \
        --png docs/lightweight_front.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--bar", type=float, default=None, help="test accuracy to beat, e.g. 0.925")
    parser.add_argument("--max-params", type=int, default=None)
    parser.add_argument("--png", type=Path, default=None)
    args = parser.parse_args()
    path = args.run_dir / "models" / "manifest.json"
    if not path.is_file():
        print(f"{path} not found: run `nago run` (with [export]) or `nago export` first", file=sys.stderr)
        return 2
    manifest = json.loads(path.read_text())
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
    if args.bar is not None:
        within = [r for r in table if args.max_params is None or r["params"] <= args.max_params]
        beat = [r for r in within if r["test_accuracy"] > args.bar]
        limit = f" with <= {args.max_params:,} params" if args.max_params else ""
        if beat:
            best = min(beat, key=lambda r: r["params"])
            print(f"\n{len(beat)} model(s){limit} beat {100 * args.bar:.2f} % test accuracy; the smallest: trial "
                  f"{best['trial']}, {best['params']:,} params, {100 * best['test_accuracy']:.2f} %")
        else:
            print(f"\nno model{limit} beats {100 * args.bar:.2f} % test accuracy")
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
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        x = np.array([r["params"] for r in table])
        y = np.array([100 * r["test_accuracy"] for r in table])
        ax.scatter(x, y, color="C0", label="final training, test")
        f = sorted(front(table), key=lambda r: r["params"])
        ax.step([r["params"] for r in f], [100 * r["test_accuracy"] for r in f], where="post", color="C0")
        sx = [r["params"] for r in table if r["search_error"] is not None]
        sy = [100 * (1 - r["search_error"]) for r in table if r["search_error"] is not None]
        ax.scatter(sx, sy, color="0.6", marker="x", label="search (validation, 1 epoch)")
        if args.bar is not None:
            ax.axhline(100 * args.bar, color="C3", ls="--", label=f"bar {100 * args.bar:.1f} %")
        if args.max_params:
            ax.axvline(args.max_params, color="C3", ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("accuracy (%)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)
        plt.close(fig)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
