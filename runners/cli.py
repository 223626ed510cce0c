"""The ``nago`` command line: check, run, draw, status, report, export, predict."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from nago_spec import __version__
from nago_spec.errors import DataError, NagoError, RunBusy, SpecError
from nago_spec.registry import BACKENDS
from nago_spec.runners.progress import MODES, silence_closed_stream

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def check_summary(spec_path: Path) -> dict[str, Any]:
    """What ``nago check`` prints: the validated spec, the data, the space and one sample network."""
    from nago_spec.pipeline import DataShape, Evaluator, sample_architecture
    from nago_spec.seeds import sample_seed
    from nago_spec.spec import load_spec
    from nago_spec.runners.worker import load_data

    spec = load_spec(spec_path)
    spec.require_callables()  # from the command line every objective names its callable
    summary: dict[str, Any] = {"name": spec.name, "version": spec.version, "seed": spec.seed, "kind": spec.space.kind}
    data = load_data(spec)
    shape = DataShape.of(data) if data is not None else None
    problem = Evaluator(spec).problem(shape)
    if data is not None:
        summary["data"] = {
            "dataset": spec.data.dataset,
            "path": str(spec.data.path) if spec.data.path else None,
            "train": len(data.y_train), "val": len(data.y_val), "test": len(data.y_test),
            "input": [data.in_channels, *data.image_size],
            "classes": list(data.classes),
        }
    summary["space"] = [
        {k: v for k, v in vars(p).items()} | {"type": type(p).__name__.removesuffix("Param").lower()}
        for p in problem.space.params
    ]
    summary["objectives"] = [
        {"name": o.name, "direction": o.direction, "cheap": o.cheap} for o in problem.objectives
    ]
    summary["constraints"] = [{"objective": c.objective, "min": c.min, "max": c.max} for c in problem.constraints]
    summary["search"] = {"strategy": spec.search.strategy, "budget": spec.search.budget,
                         "initial": spec.search.initial, "batch": spec.search.batch}
    if spec.search.warm_start:
        from nago_spec.warm import warm_trials

        summary["search"]["warm_start"] = {"runs": [str(p) for p in spec.search.warm_start],
                                           "trials": len(warm_trials(spec))}
    if spec.search.fidelity is not None:
        f = spec.search.fidelity
        summary["search"]["fidelity"] = {"on": f.on, "eta": f.eta, "budgets": list(f.budgets()),
                                         "brackets": [list(map(list, f.bracket(i))) for i in range(f.s_max + 1)]}
    summary["run"] = {"backend": spec.run.backend, "workers": spec.run.workers, **_devices(spec, spec_path)}
    if shape is not None:
        import numpy as np

        center = problem.space.from_unit(np.full(problem.space.dim, 0.5))
        arch = sample_architecture(spec, center, sample_seed(spec.seed, 0, 0), shape)
        # the budget sizes the bottom-level convs only (NAGO.md §1.6); the real count includes stem, head, projections
        summary["sample_network"] = {"params_point": center, "param_budget": center.get("param_budget", spec.space.param_budget),
                                     **arch.summary()}
        if spec.export.param_budget is not None:  # what the final training builds of the same sample
            wide = sample_architecture(spec, center, sample_seed(spec.seed, 0, 0), shape, spec.export.param_budget)
            summary["sample_network"]["exported"] = {"param_budget": spec.export.param_budget,
                                                     "params": wide.param_count(), "stage_channels": wide.stage_channels}
    return summary


def _devices(spec, shown: Path) -> dict[str, Any]:
    """Where a run of ``spec`` trains: the device, the workers and their GPUs, the precision; a device
    the machine lacks raises the run's SpecError here too."""
    import os

    from nago_spec.device import default_workers, machine, worker_bindings
    from nago_spec.runners.run import placement_of

    r = spec.run
    m = machine()
    placement = placement_of(spec, str(shown), m)
    out: dict[str, Any] = {"device": r.device, "resolved": placement.kind, "torch_sees": m.describe()}
    if spec.space.kind == "params":
        return out
    if r.backend == "process":
        workers = r.workers or default_workers(placement, r.workers_per_device, os.cpu_count())
        out["workers"] = workers
        if placement.kind == "cuda":
            out["gpus"] = list(placement.gpus)
            out["worker_gpus"] = [b.gpu for b in worker_bindings(placement, workers)]
    elif r.backend == "ray":
        out["num_gpus"] = r.num_gpus
    out["precision"] = placement.precision
    return out


def draw(target: Path, out: Path, trial: int | None = None) -> str:
    """``nago draw``: a spec's centre point (architecture of trial ``trial``, default 0), or a run's
    trial (default: the best of its front by the first objective). Returns a line saying what was drawn."""
    import numpy as np

    from nago_spec.draw import draw_architecture
    from nago_spec.errors import StoreError
    from nago_spec.pipeline import DataShape, Evaluator, sample_architecture
    from nago_spec.report import run_front
    from nago_spec.seeds import sample_seed
    from nago_spec.spec import load_spec
    from nago_spec.store import Store
    from nago_spec.runners.worker import load_data

    spec_file = target / "spec.toml" if target.is_dir() else target
    if target.is_dir() and not (target / "study.db").exists():
        raise StoreError(f"{target}: not a run directory (no study.db / spec.toml)")
    spec = load_spec(spec_file)
    if spec.space.kind == "params":
        raise NagoError(f"{spec_file}: a plain-parameter spec has no architecture to draw")
    data = load_data(spec)
    problem = Evaluator(spec).problem(DataShape.of(data))
    if target.is_dir():
        with Store(target / "study.db", readonly=True) as store:
            trials = store.trials()
        if trial is None:
            best = sorted(run_front(trials, problem.objectives, problem.constraints).pareto,
                          key=lambda t: t.values[problem.objectives[0].name] * (1 if problem.objectives[0].direction == "minimize" else -1))
            if not best:
                raise NagoError(f"{target}: no complete trial to draw yet")
            chosen = best[0]
        else:
            chosen = next((t for t in trials if t.id == trial), None)
            if chosen is None:
                raise NagoError(f"{target}: no trial {trial} (trials 0..{len(trials) - 1})")
        # a promoted trial trained its configuration's architectures
        tid = chosen.id if chosen.config is None else chosen.config
        params, what = chosen.params, f"trial {chosen.id} ({chosen.state.value.lower()})"
    else:
        tid = trial or 0
        params = problem.space.from_unit(np.full(problem.space.dim, 0.5))
        what = f"the centre of the space, architecture of trial {tid}"
    arch = sample_architecture(spec, params, sample_seed(spec.seed, tid, 0), DataShape.of(data))
    draw_architecture(arch, out, title=f"{spec.name}: {what}; {arch.param_count():,} parameters, {arch.mac_count():,} MACs")
    return f"{out}: {what}: {arch.param_count():,} parameters"


def _print_summary(s: dict[str, Any]) -> None:
    print(f"{s['name']}: valid spec (version {s['version']}, kind {s['kind']}, seed {s['seed']})")
    if "data" in s:
        d = s["data"]
        print(f"  data: {d['dataset']} {'x'.join(map(str, d['input']))}, {len(d['classes'])} classes, "
              f"train {d['train']} / val {d['val']} / test {d['test']}")
    print(f"  space: {len(s['space'])} searched parameters")
    width = max((len(p["name"]) for p in s["space"]), default=0)
    for p in s["space"]:
        rng = f"{p['choices']}" if p["type"] == "categorical" else f"[{p['low']}, {p['high']}]" + (" log" if p.get("log") else "")
        print(f"    {p['name']:<{width}}  {p['type']:<11} {rng}")
    print("  objectives: " + ", ".join(f"{o['name']} ({o['direction']}{', cheap' if o['cheap'] else ''})" for o in s["objectives"]))
    if s["constraints"]:
        print("  constraints: " + ", ".join(
            f"{c['objective']}" + (f" >= {c['min']}" if c["min"] is not None else "") + (f" <= {c['max']}" if c["max"] is not None else "")
            for c in s["constraints"]))
    q = s["search"]
    r = s["run"]
    print(f"  search: {q['strategy']}, budget {q['budget']}, initial {q['initial']}, batch {q['batch']}; "
          f"run: {r['backend']} x {r['workers'] or 'all cores'}")
    if "warm_start" in q:
        print(f"  warm start: {q['warm_start']['trials']} completed trial(s) of {', '.join(q['warm_start']['runs'])}")
    if "precision" in r:
        where = r["resolved"]
        if "worker_gpus" in r:
            where = f"cuda, GPUs {', '.join(r['gpus'])}; worker GPUs: {', '.join(r['worker_gpus'])}"
        elif r["backend"] == "ray" and where == "cuda":
            where = f"cuda, the GPU each Ray trial claims ({r['num_gpus']:g} GPU per trial)"
        print(f"  device: {where} ([run].device = {r['device']!r}; {r['torch_sees']}); precision {r['precision']}")
    if "fidelity" in q:
        fq = q["fidelity"]
        unit = "epochs" if fq["on"] == "epochs" else "of the training data"
        print(f"  fidelity: Hyperband, eta {fq['eta']}, budgets {', '.join(f'{b:g}' for b in fq['budgets'])} {unit}; "
              "brackets " + "; ".join(" -> ".join(f"{n} at {b:g}" for n, b in br) for br in fq["brackets"]))
    if "sample_network" in s:
        n = s["sample_network"]
        print("  sample network (centre of the space): " + ", ".join(
            f"{k} {v}" for k, v in n.items() if k != "params_point" and not isinstance(v, (dict, list))))
        for key in ("ops", "merges"):
            if n.get(key):
                print(f"    {key}: " + ", ".join(f"{name} {count}" for name, count in n[key].items()))
        if "exported" in n:
            w = n["exported"]
            print(f"    final training at [export].param_budget {w['param_budget']:,}: the same graphs with "
                  f"{w['params']:,} params, stage channels {', '.join(map(str, w['stage_channels']))}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nago", description="Neural Architecture Generator Optimization from a TOML spec.")
    p.add_argument("--version", action="version", version=f"nago-spec {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="validate a spec and summarise its space and a sample network")
    c.add_argument("spec", type=Path)
    c.add_argument("--json", action="store_true", help="machine-readable summary")

    r = sub.add_parser("run", help="run a spec, or resume the run already in its directory")
    r.add_argument("spec", type=Path)
    r.add_argument("--out", type=Path, help="run directory (default runs/<name>)")
    r.add_argument("--seed", type=int)
    r.add_argument("--budget", type=int, help="evaluations in all (a resumed run may be extended)")
    r.add_argument("--backend", metavar="{" + ",".join(BACKENDS.names()) + "}", help="where trials run (default: [run] backend)")
    r.add_argument("--workers", type=int)
    r.add_argument("--device", help='where networks train: auto, cpu, cuda, cuda:N, mps (default: [run] device)')
    r.add_argument("--force-new", action="store_true", help="discard the run already in the directory (its models move to models/superseded/)")
    r.add_argument("--progress", choices=MODES, default="auto", help="display mode (default: live on a terminal)")
    r.add_argument("-q", "--quiet", action="store_true", help="same as --progress quiet")

    d = sub.add_parser("draw", help="draw the three graph levels of one architecture to a PNG")
    d.add_argument("target", type=Path, help="a spec file or a run directory")
    d.add_argument("--trial", type=int, help="the trial to draw (run: default the best; spec: seeds the sample)")
    d.add_argument("--out", type=Path, required=True, help="the PNG file to write")

    pr = sub.add_parser("predict", help="classify images or .npy batches with an exported ONNX model",
                        description="Classify images or .npy batches with an exported ONNX model. "
                                    "Exit 2 when a file is missing or unusable, 1 when the model is.")
    pr.add_argument("model", type=Path, help="an ONNX classifier (one float32 input [batch, C, H, W])")
    pr.add_argument("files", type=Path, nargs="+", help="image files (.png, .jpg, ...) or .npy arrays")
    pr.add_argument("--top", type=int, default=1, help="classes shown per image (default 1)")
    pr.add_argument("--json", action="store_true", help="print the predictions as JSON")

    for name, text in (("status", "one screen on a run"), ("report", "rewrite report.md, CSVs and plots"),
                       ("export", "final training and ONNX export of a run's chosen points (continues an interrupted one)")):
        s = sub.add_parser(name, help=text)
        s.add_argument("run_dir", type=Path)
        if name == "report":
            s.add_argument("--compare", type=Path, nargs="+", default=[], metavar="RUN_DIR",
                           help="other runs of the same objectives (random search, ...) to draw on hv.png")
            s.add_argument("--out", type=Path, default=None, metavar="FOLDER",
                           help="write the report files here instead of RUN_DIR (an archive that cannot be written)")
        if name == "export":
            s.add_argument("--force", action="store_true", help="retrain every model (default: only the missing ones)")
            s.add_argument("--progress", choices=MODES, default="auto", help="display mode (default: live on a terminal)")
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: the command stops as on Ctrl-C (a run's trials in flight are
    left to resume, its workers stopped)."""


#: The file system's refusals, which are the machine's and not a bug: errno -> what to do.
_ENVIRONMENT_ERRNOS = {
    errno.EROFS: ("the run directory cannot be written here (nago status still reads it, nago report --out "
                  "FOLDER reports it elsewhere); copy it somewhere writable"),
    errno.EACCES: "no permission to write it; give a directory you can write",
    errno.EPERM: "no permission to write it; give a directory you can write",
    errno.ENOSPC: "free some space and run the same command again: it resumes",
    errno.EDQUOT: "over the disk quota: free some space and run the same command again: it resumes",
}


def _raise_terminated(signum: int, frame: Any) -> None:
    """The first SIGTERM stops the command; later ones are ignored, so that they cannot cut short the
    clean-up it starts (stopping workers, closing the store). Ctrl-C stays the user's way to force it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def _error(text: str) -> None:
    """Print one error line to stderr; a closed stderr loses the line, never the exit code."""
    try:
        print(text, file=sys.stderr)
    except BrokenPipeError:
        silence_closed_stream(sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main_thread else None
    try:
        return _main(args)
    except BrokenPipeError:  # `nago status | head -1`: the reader has what it wanted
        silence_closed_stream(sys.stdout)
        return EXIT_OK
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace) -> int:
    try:
        if args.command == "check":
            summary = check_summary(args.spec)
            if args.json:
                print(json.dumps(summary, indent=2, default=str))
            else:
                _print_summary(summary)
        elif args.command == "run":
            from nago_spec import Study
            from nago_spec.spec import load_spec

            from nago_spec.runners.run import RunOptions, overrides

            flags = RunOptions(seed=args.seed, budget=args.budget, backend=args.backend, workers=args.workers,
                               device=args.device)
            spec = load_spec(args.spec, overrides(flags) or None)
            spec.require_callables()  # a command line has no function to give
            Study.create(spec, args.out, force_new=args.force_new).optimize(
                progress="quiet" if args.quiet else args.progress)
        elif args.command == "draw":
            print(draw(args.target, args.out, args.trial))
        elif args.command in ("status", "report", "export"):
            from nago_spec import Study

            study = Study.open(args.run_dir)
            if args.command == "status":
                print(study.status())
            elif args.command == "report":
                print(study.report(args.compare, args.out))
            else:
                study.export(force=args.force, progress=args.progress)
                print(study.directory / "models" / "manifest.json")
        elif args.command == "predict":
            from nago_spec.predict import predict

            try:
                results = predict(args.model, args.files, top=args.top)
            except DataError as exc:  # a file named on the command line that is missing or unusable: bad input
                _error(f"error: {exc}")
                return EXIT_USAGE
            if args.json:
                print(json.dumps(results, indent=2))
            else:
                for r in results:
                    print(f"{r['source']}: " + ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in r["top"]))
    except SpecError as exc:
        for line in exc.lines:
            _error(line)
        return EXIT_USAGE
    except RunBusy as exc:  # another live process owns the run directory: nothing was touched
        _error(f"error: {exc}")
        return EXIT_USAGE
    except DataError as exc:
        _error(f"{getattr(args, 'spec', '')}: [data]: {exc}")
        return EXIT_USAGE
    except NagoError as exc:
        _error(f"error: {exc}")
        return EXIT_ERROR
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        _error(f"error: {exc.filename or 'a file'}: {exc.strerror.lower()}; {_ENVIRONMENT_ERRNOS[exc.errno]}")
        return EXIT_ERROR
    except KeyboardInterrupt as exc:
        if isinstance(exc, Terminated):
            _error("terminated (SIGTERM): trials in flight are left to resume; re-run the same command to resume")
            return 128 + signal.SIGTERM
        _error("interrupted: re-run the same command to resume")
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
