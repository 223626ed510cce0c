"""GPU training speed: generated networks against the same layers written by hand, and a search on the GPU
against the same search on two CPU cores, in one run.

Part 1 (``networks``): for each architecture of benchmarks/bench_network.py's CASES, sampled for
CIFAR-10's 3x32x32 input, one SGD training step at ``--batch`` (zero_grad, forward under autocast,
cross-entropy, backward, step), ours (nago_spec.network) and the hand-written straight-line module
bound to the same layers (bench_network.hand_written), alternating in blocks, timed with one
synchronisation per block. Rows: fp32 and bf16, NCHW and channels_last, cuDNN autotuning off and
on; the ratio ours / hand in images per second (target >= 0.9). Then ``torch.compile`` (default and
"reduce-overhead", which captures CUDA graphs) of the first case: its compile time, its step time,
and the steps a trial needs before it pays (specs/06 trains ~700 steps a trial on all 45k images,
~140 on its 10k subsample).

Part 2 (``search``): specs/06_cifar10_jpg.toml with ``--budget`` trials and no export, run on the
GPU (``[run].device = "cuda"``, two workers per GPU) and on the CPU as this project's machine runs it
(``device = "cpu"``, 2 workers of one thread); the same seeds, so the same trials.
Prints both wall times and the ratio (target >= 10x). Needs the CIFAR-10 JPEG copy (``--data``).

Skips, saying why, where torch sees no CUDA GPU. ``--allow-cpu`` runs part 1 on the CPU instead
(tests/test_bench_gpu.py uses it to check this script's logic on machines without a GPU).

    python benchmarks/bench_gpu.py [--steps 60] [--batch 128] [--budget 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_network  # noqa: E402 - a sibling script, not a package

from nago_spec.generator import sample_architecture  # noqa: E402
from nago_spec.network import build_network  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "specs" / "06_cifar10_jpg.toml"
SHAPE = (3, 32, 32)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def step_fn(module: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, dtype):
    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(module(x), y)
        loss.backward()
        opt.step()

    return step


def timed(steps: dict[str, callable], n: int, dev: torch.device, blocks: int = 5) -> dict[str, float]:
    """Seconds per step of each function, run in alternating blocks of ``n // blocks`` steps."""
    per = max(1, n // blocks)
    spent = {k: 0.0 for k in steps}
    for _ in range(blocks):
        for k, fn in steps.items():
            sync(dev)
            t = time.perf_counter()
            for _ in range(per):
                fn()
            sync(dev)
            spent[k] += time.perf_counter() - t
    return {k: v / (per * blocks) for k, v in spent.items()}


def networks(dev: torch.device, args) -> list[dict]:
    """Part 1: images/s of ours and the hand-written module per case, precision, format and cuDNN mode."""
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(args.batch, *SHAPE, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(dev)
    rows = []
    cases = [c for c in bench_network.CASES if not args.cases or any(c.startswith(p) for p in args.cases)]
    print(f"part 1: training step at batch {args.batch}, input {'x'.join(map(str, SHAPE))}, {dev}, "
          f"{args.steps} steps each")
    print(f"{'case':<20} {'prec':<5} {'format':<6} {'cudnn':<5} {'ours ms':>8} {'hand ms':>8} {'ours img/s':>11} "
          f"{'hand img/s':>11} {'ours/hand':>9}")
    for name in cases:
        arch = sample_architecture(bench_network.CASES[name], 1, in_channels=SHAPE[0], image_size=SHAPE[1:],
                                   num_classes=10)
        model = build_network(arch, 1)
        ref = bench_network.hand_written(model, arch)
        model.eval()
        with torch.no_grad():
            diff = (model(x0) - ref(x0)).abs().max().item()
        if diff > 1e-4:
            raise SystemExit(f"{name}: the hand-written module differs from ours by {diff:.2e}")
        model.train().to(dev)  # ref shares the layers: it moves with them
        for prec, dtype in PRECISIONS.items():
            for fmt in ("nchw", "nhwc"):
                memory = torch.channels_last if fmt == "nhwc" else torch.contiguous_format
                model.to(memory_format=memory)
                x = x0.to(dev).contiguous(memory_format=memory)
                for cudnn in ((False, True) if dev.type == "cuda" else (False,)):
                    torch.backends.cudnn.benchmark = cudnn
                    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
                    steps = {"ours": step_fn(model, opt, x, y, dtype), "hand": step_fn(ref, opt, x, y, dtype)}
                    timed(steps, 3 * len(steps), dev, blocks=1)  # warm-up (and cuDNN's tuning)
                    t = timed(steps, args.steps, dev)
                    row = {"case": name, "ops": arch.summary()["op_nodes"], "params": arch.param_count(),
                           "precision": prec, "format": fmt, "cudnn_benchmark": cudnn,
                           "ours_ms": 1e3 * t["ours"], "hand_ms": 1e3 * t["hand"],
                           "ours_img_s": args.batch / t["ours"], "hand_img_s": args.batch / t["hand"],
                           "ratio": t["hand"] / t["ours"]}
                    rows.append(row)
                    print(f"{name:<20} {prec:<5} {fmt:<6} {str(cudnn):<5} {row['ours_ms']:>8.2f} {row['hand_ms']:>8.2f} "
                          f"{row['ours_img_s']:>11.0f} {row['hand_img_s']:>11.0f} {row['ratio']:>9.3f}")
        model.to(memory_format=torch.contiguous_format)
    torch.backends.cudnn.benchmark = False
    worst = min(r["ratio"] for r in rows)
    print(f"worst ours/hand: {worst:.3f} (target >= 0.9)")
    return rows


def compiled(dev: torch.device, args) -> list[dict]:
    """torch.compile of the first case: compile seconds, step time, and the steps before it pays."""
    name = next(iter(bench_network.CASES))
    arch = sample_architecture(bench_network.CASES[name], 1, in_channels=SHAPE[0], image_size=SHAPE[1:],
                               num_classes=10)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, *SHAPE, generator=gen).to(dev)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(dev)
    dtype = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else None
    out = []
    print(f"\ntorch.compile, {name}, {'bf16' if dtype else 'fp32'}:")
    for mode in ("eager", "default", "reduce-overhead"):
        model = build_network(arch, 1).to(dev).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        module = model if mode == "eager" else torch.compile(model, mode=mode)
        step = step_fn(module, opt, x, y, dtype)
        sync(dev)
        t = time.perf_counter()
        for _ in range(3):  # compilation (and, with reduce-overhead, graph capture) happens here
            step()
        sync(dev)
        setup = time.perf_counter() - t
        per = timed({"s": step}, args.steps, dev)["s"]
        out.append({"mode": mode, "setup_s": setup, "step_ms": 1e3 * per})
    eager = out[0]["step_ms"]
    for r in out[1:]:
        gain = eager - r["step_ms"]
        r["break_even_steps"] = (r["setup_s"] - out[0]["setup_s"]) * 1e3 / gain if gain > 0 else None
    for r in out:
        be = r.get("break_even_steps")
        pays = "" if r["mode"] == "eager" else (f", pays after {be:.0f} steps" if be else ", never pays")
        print(f"  {r['mode']:<16} first 3 steps {r['setup_s']:7.2f} s, then {r['step_ms']:7.2f} ms a step{pays}")
    return out


def search(args) -> dict:
    """Part 2: the same specs/06 trials on the GPU and on 2 CPU cores; wall times and ratio."""
    from nago_spec.spec import dump_toml, load_spec
    from nago_spec.store import Store
    from nago_spec.runners.run import RunOptions, run

    data = {"path": str(Path(args.data).resolve())} if args.data else {}
    if not Path(args.data or load_spec(SPEC).data.path).exists():
        print(f"\npart 2 skipped: the CIFAR-10 JPEG copy is not at {args.data or load_spec(SPEC).data.path}")
        return {"skipped": "no data"}
    result = {"budget": args.budget}
    print(f"\npart 2: {SPEC.name}, {args.budget} trials, no export")
    with tempfile.TemporaryDirectory() as tmp:
        gpu_workers = 2 * torch.cuda.device_count()  # two small networks per GPU
        for where, run_keys in (("gpu", {"device": "cuda", "workers_per_device": 2, "workers": gpu_workers}),
                                ("cpu", {"device": "cpu", "workers": 2})):
            if where == "gpu" and not torch.cuda.is_available():
                continue
            spec = load_spec(SPEC, {"data": data, "search": {"budget": args.budget}, "export": {"onnx": False},
                                    "run": {"backend": "process", **run_keys}})
            path = Path(tmp) / f"{where}.toml"
            path.write_text(dump_toml(spec))
            t = time.perf_counter()
            out = run(path, RunOptions(out=Path(tmp) / where, mode="quiet"))
            wall = time.perf_counter() - t
            with Store(out / "study.db") as store:
                trials = store.trials()
            seconds = [t.seconds for t in trials if t.seconds]
            result[where] = {"wall_s": wall, "trial_s_median": statistics.median(seconds) if seconds else None,
                             "states": sorted({t.state.value for t in trials}),
                             "devices": sorted({t.device or "?" for t in trials}),
                             "errors": [t.values.get("error") for t in trials if t.values]}
            print(f"  {where} ({spec.run.workers} workers): {wall:7.1f} s wall, median trial {result[where]['trial_s_median'] or 0:.1f} s, "
                  f"devices {result[where]['devices']}, states {result[where]['states']}")
    if "gpu" in result and "cpu" in result:
        result["speedup"] = result["cpu"]["wall_s"] / result["gpu"]["wall_s"]
        print(f"  GPU search {result['speedup']:.1f}x faster than 2 CPU cores (target >= 10x)")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per row (part 1)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--cases", nargs="*", help="case name prefixes of bench_network.CASES (default: all)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    parser.add_argument("--no-search", action="store_true", help="skip part 2")
    parser.add_argument("--budget", type=int, default=2, help="trials of the specs/06 search on each device")
    parser.add_argument("--data", help="the CIFAR-10 JPEG archive (default: specs/06's path)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--allow-cpu", action="store_true", help="run part 1 on the CPU where no GPU is visible")
    args = parser.parse_args()
    if torch.cuda.is_available():
        dev = torch.device("cuda:0")
        print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    elif args.allow_cpu:
        dev = torch.device("cpu")
        torch.set_num_threads(1)
        print(f"no GPU: part 1 on the CPU (--allow-cpu), torch {torch.__version__}")
    else:
        print(f"bench_gpu: skipped: torch {torch.__version__} sees no CUDA GPU "
              f"({'a CPU-only build' if not torch.backends.cuda.is_built() else 'no device found'})")
        return 0
    report = {"device": str(dev), "networks": networks(dev, args)}
    if not args.no_compile:
        report["compile"] = compiled(dev, args)
    if not args.no_search:
        report["search"] = search(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
