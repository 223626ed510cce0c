"""The run loop: propose with the strategy, evaluate on a backend, store every trial, report, export."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nago_spec.errors import NagoError, StoreError
from nago_spec.pareto import to_minimization
from nago_spec.pipeline import DataShape, Evaluator, sample_noise
from nago_spec.report import Compared, front, normalised_hv, write_report
from nago_spec.spec import Spec, dump_toml, load_spec
from nago_spec.store import Store, TrialRecord, TrialState
from nago_spec.strategies import STRATEGIES
from runners import worker
from runners.backends import Backend, TrialTimeout, WorkerLost, make_backend
from runners.progress import Progress

log = logging.getLogger(__name__)

RUN_FILES = ("study.db", "study.db-wal", "study.db-shm", "spec.toml", "trials.csv", "pareto.csv",
             "report.md", "pareto.png", "hv.png")


@dataclass(frozen=True)
class RunOptions:
    out: Path | None = None
    seed: int | None = None
    budget: int | None = None
    backend: str | None = None
    workers: int | None = None
    force_new: bool = False
    mode: str = "auto"  # auto | rich | plain | quiet | json


def overrides(opts: RunOptions) -> dict[str, Any]:
    """The command-line flags as a spec overlay (validated with the spec itself)."""
    o: dict[str, Any] = {}
    if opts.seed is not None:
        o["seed"] = opts.seed
    if opts.budget is not None:
        o.setdefault("search", {})["budget"] = opts.budget
    if opts.backend is not None:
        o.setdefault("run", {})["backend"] = opts.backend
    if opts.workers is not None:
        o.setdefault("run", {})["workers"] = opts.workers
    return o


def resume_key(spec: Spec) -> str:
    """What must not change for a run directory to be continued: the search, less its budget."""
    d = spec.to_dict()
    for k in ("name", "run", "export"):
        d.pop(k, None)
    d.get("search", {}).pop("budget", None)
    return json.dumps(d, sort_keys=True)


def prepare_run_dir(spec: Spec, run_dir: Path, force_new: bool) -> Path:
    """Create or check ``run_dir``; returns the path of the resolved spec.toml the workers read."""
    run_dir.mkdir(parents=True, exist_ok=True)
    db = run_dir / "study.db"
    if db.exists() and force_new:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "models", ignore_errors=True)
    if db.exists():
        with Store(db) as store:
            old = store.get_meta("resume_key")
        if old is not None and old != resume_key(spec):
            changed = _changed_keys(json.loads(old), json.loads(resume_key(spec)))
            raise StoreError(
                f"{run_dir} holds a run of a different search (changed: {', '.join(changed)}); "
                "use --force-new to start over or --out for another directory"
            )
    spec_file = run_dir / "spec.toml"
    spec_file.write_text(dump_toml(spec))
    return spec_file


def _changed_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _changed_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out or ["?"]


def run(spec_path: Path, opts: RunOptions = RunOptions()) -> Path:
    """Run (or resume) the search a spec declares; returns the run directory."""
    spec = load_spec(spec_path, overrides(opts) or None)
    run_dir = (opts.out or Path("runs") / spec.name).resolve()
    spec_file = prepare_run_dir(spec, run_dir, opts.force_new)
    started = time.time()
    data = worker.load_data(str(spec_file))
    shape = DataShape.of(data) if data is not None else None
    evaluator = Evaluator(spec, run_dir)
    problem = evaluator.problem(shape)
    strategy = STRATEGIES.get(spec.search.strategy)(
        problem, seed=spec.seed, initial=spec.search.initial, batch=spec.search.batch, options=spec.search.options
    )
    backend = backend_of(spec)
    progress = Progress(opts.mode, total=spec.search.budget, objectives=problem.objectives)
    try:
        with Store(run_dir / "study.db") as store:
            store.set_meta("resume_key", resume_key(spec))
            store.set_meta("spec_hash", spec.search_hash())
            requeued = store.requeue_running()
            if requeued:
                log.info("re-queued trials left running by a stopped run: %s", requeued)
            for t in store.trials():
                if t.state in (TrialState.COMPLETE, TrialState.FAILED):
                    complete = t.state is TrialState.COMPLETE
                    strategy.tell(t.id, t.params, t.values if complete else None,
                                  sample_noise(t.samples) if complete else None)
            _search(spec, spec_file, run_dir, store, strategy, backend, progress, problem)
            trials = store.trials()
            wall = float(store.get_meta("wall_seconds") or 0.0) + (time.time() - started)
            fr = _report(spec, run_dir, trials, problem, wall)
            chosen = export_selection(spec, fr.pareto, problem)
            if spec.space.kind != "params" and spec.export.onnx and chosen and not _manifest_current(run_dir, spec, chosen):
                progress.message(f"final training and ONNX export of {len(chosen)} Pareto model(s)")
                export_models(spec, spec_file, run_dir, chosen, backend, problem)
                wall = float(store.get_meta("wall_seconds") or 0.0) + (time.time() - started)
                _report(spec, run_dir, trials, problem, wall)
            store.set_meta("wall_seconds", str(wall))
    finally:
        progress.close()
        backend.close()
    progress.message(f"run directory: {run_dir}")
    return run_dir


def backend_of(spec: Spec) -> Backend:
    r = spec.run
    if r.backend == "ray":
        return make_backend("ray", r.workers, address=r.address, num_cpus=r.num_cpus, num_gpus=r.num_gpus)
    return make_backend(r.backend, r.workers)


def _report(spec: Spec, run_dir: Path, trials: list[TrialRecord], problem, wall: float,
            compare: Sequence[Compared] = ()):
    return write_report(
        run_dir, name=spec.name, strategy=spec.search.strategy, budget=spec.search.budget, trials=trials,
        param_names=problem.space.names, objectives=problem.objectives, constraints=problem.constraints,
        wall_seconds=wall, initial=spec.search.initial, compare=compare,
    )


def _search(spec, spec_file: Path, run_dir: Path, store: Store, strategy, backend: Backend, progress: Progress, problem) -> None:
    """Keep every worker busy until ``budget`` trials are finished (COMPLETE or FAILED).

    A trial whose worker died (WorkerLost) goes back to the front of the queue, at most
    ``run.max_retries`` times; one that ran past ``run.trial_timeout`` fails (a hang would recur).
    """
    budget = spec.search.budget
    all_trials = {t.id: t for t in store.trials()}
    queue = deque(t.id for t in all_trials.values() if t.state is TrialState.PENDING)
    running: dict[Future, int] = {}
    lost: dict[int, int] = {}  # trial id -> workers that died under it in this process
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.FAILED) for t in all_trials.values())
    progress.start(finished, _summary(store, problem))
    while True:
        while len(running) < backend.workers:
            if not queue:
                total = store.next_trial_id()
                n = min(spec.search.batch, budget - total)
                if n <= 0:
                    break
                pending = [(i, all_trials[i].params) for i in list(running.values())]
                proposals = strategy.ask(n, next_trial_id=total, pending=pending)
                for tid in store.add_trials(total, proposals):
                    queue.append(tid)
                all_trials = {t.id: t for t in store.trials()}
            tid = queue.popleft()
            store.mark_running(tid, host=socket.gethostname())
            fut = backend.submit(worker.evaluate_trial, str(spec_file), str(run_dir), tid, all_trials[tid].params,
                                 timeout=spec.run.trial_timeout)
            running[fut] = tid
            progress.running(len(running))
        if not running:
            break
        done, _ = wait(list(running), return_when=FIRST_COMPLETED)
        for fut in sorted(done, key=lambda f: running[f]):
            tid = running.pop(fut)
            try:
                out = fut.result()
            except WorkerLost as exc:
                lost[tid] = lost.get(tid, 0) + 1
                if lost[tid] <= spec.run.max_retries:
                    store.requeue(tid, f"{exc}; re-queued ({lost[tid]} of {spec.run.max_retries} retries)")
                    queue.appendleft(tid)
                    progress.message(f"trial {tid}: {exc}; re-queued")
                    continue
                out = {"ok": False, "error": f"{exc} ({lost[tid]} time(s); max_retries = {spec.run.max_retries})"}
            except TrialTimeout as exc:
                out = {"ok": False, "error": str(exc)}
            except Exception as exc:  # noqa: BLE001 - the backend's failure is this trial's, not the run's
                out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            params = all_trials[tid].params
            if out["ok"]:
                store.complete(tid, out["values"], out["samples"])
                strategy.tell(tid, params, out["values"], sample_noise(out["samples"]))
            else:
                store.fail(tid, out["error"])
                strategy.tell(tid, params, None)
            progress.finished(tid, out, len(running), _summary(store, problem))


def _summary(store: Store, problem) -> dict[str, Any]:
    """Counts, best value per objective and hypervolume, for the progress display."""
    trials = store.trials()
    counts = {s.value: sum(t.state is s for t in trials) for s in TrialState}
    fr = front(trials, problem.objectives, problem.constraints)
    best = {}
    for o in problem.objectives:
        vals = [t.values[o.name] for t, ok in zip(fr.complete, fr.feasible) if ok]
        if vals:
            best[o.name] = min(vals) if o.direction == "minimize" else max(vals)
    feas = [t for t, ok in zip(fr.complete, fr.feasible) if ok]
    hv = normalised_hv(to_minimization([t.values for t in feas], problem.objectives), fr) if feas else 0.0
    return {"counts": counts, "best": best, "hypervolume": hv}


def export_selection(spec: Spec, pareto: list[TrialRecord], problem) -> list[TrialRecord]:
    """The Pareto trials to export: best first by the first objective, at most ``export.max_models``."""
    ordered = sorted(pareto, key=lambda t: to_minimization([t.values], problem.objectives)[0][0])
    return ordered[: spec.export.max_models] if spec.export.max_models else ordered


def _manifest_current(run_dir: Path, spec: Spec, chosen: list[TrialRecord]) -> bool:
    """Whether models/manifest.json already holds exactly these trials of this search."""
    path = run_dir / "models" / "manifest.json"
    if not path.exists():
        return False
    m = json.loads(path.read_text())
    done = sorted([e["trial"] for e in m["models"]] + [e["trial"] for e in m["failed"]])
    return m.get("spec_hash") == spec.search_hash() and done == sorted(t.id for t in chosen)


def export_models(spec: Spec, spec_file: Path, run_dir: Path, ordered: list[TrialRecord], backend: Backend, problem) -> list[dict]:
    """Final training and ONNX export of ``ordered`` trials into ``run_dir/models``; writes manifest.json."""
    models_dir = run_dir / "models"
    shutil.rmtree(models_dir, ignore_errors=True)
    models_dir.mkdir(parents=True)
    futures = {
        backend.submit(
            worker.final_train_export, str(spec_file), str(run_dir), t.id, t.params, str(models_dir / f"trial_{t.id}.onnx")
        ): t
        for t in ordered
    }
    entries, errors = [], []
    for fut, t in futures.items():
        out = fut.result()
        if out["ok"]:
            entry = out["entry"]
            entry["objectives"] = t.values
            entries.append(entry)
        else:
            errors.append({"trial": t.id, "error": out["error"]})
            log.error("export of trial %d failed: %s", t.id, out["error"])
    manifest = {
        "spec": spec.name,
        "spec_hash": spec.search_hash(),
        "ordered_by": problem.objectives[0].name,
        "models": entries,
        "failed": errors,
    }
    (models_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return entries


def export_run(run_dir: Path, mode: str = "auto") -> Path:
    """``nago export DIR``: redo the final training and export of a finished run."""
    spec_file = run_dir / "spec.toml"
    if not (run_dir / "study.db").exists() or not spec_file.exists():
        raise StoreError(f"{run_dir}: not a run directory (no study.db / spec.toml)")
    spec = load_spec(spec_file)
    data = worker.load_data(str(spec_file))
    problem = Evaluator(spec, run_dir).problem(DataShape.of(data) if data is not None else None)
    backend = backend_of(spec)
    try:
        with Store(run_dir / "study.db") as store:
            trials = store.trials()
            wall = float(store.get_meta("wall_seconds") or 0)
        if spec.space.kind == "params":
            raise StoreError(f"{run_dir}: a plain-parameter run has no networks to export")
        fr = front(trials, problem.objectives, problem.constraints)
        export_models(spec, spec_file, run_dir, export_selection(spec, fr.pareto, problem), backend, problem)
        _report(spec, run_dir, trials, problem, wall)
    finally:
        backend.close()
    return run_dir / "models" / "manifest.json"


def report_run(run_dir: Path, compare: Sequence[Path] = ()) -> Path:
    """``nago report DIR [--compare OTHER ...]``: rewrite the report files from the store.

    Each ``compare`` run (random search, another strategy or seed) must have the same objectives;
    its hypervolume curve is drawn on hv.png in a box shared by all the runs.
    """
    spec, problem = _open_run(run_dir)
    signature = [(o.name, o.direction) for o in problem.objectives]
    others = []
    for other in compare:
        ospec, oproblem = _open_run(other)
        if [(o.name, o.direction) for o in oproblem.objectives] != signature:
            raise NagoError(
                f"--compare {other}: its objectives ({', '.join(o.name for o in oproblem.objectives)}) differ "
                f"from {run_dir}'s ({', '.join(o.name for o in problem.objectives)})"
            )
        with Store(other / "study.db") as store:
            others.append(Compared(f"{other.name} ({ospec.search.strategy})", store.trials()))
    with Store(run_dir / "study.db") as store:
        _report(spec, run_dir, store.trials(), problem, float(store.get_meta("wall_seconds") or 0), others)
    return run_dir / "report.md"


def _open_run(run_dir: Path):
    """``(spec, problem)`` of an existing run directory."""
    spec_file = run_dir / "spec.toml"
    if not (run_dir / "study.db").exists() or not spec_file.exists():
        raise StoreError(f"{run_dir}: not a run directory (no study.db / spec.toml)")
    spec = load_spec(spec_file)
    return spec, Evaluator(spec, run_dir).problem(None)


def status_text(run_dir: Path) -> str:
    """``nago status DIR``: one screen on where a run stands."""
    spec, problem = _open_run(run_dir)
    with Store(run_dir / "study.db") as store:
        s = _summary(store, problem)
        trials = store.trials()
    fr = front(trials, problem.objectives, problem.constraints)
    c = s["counts"]
    lines = [
        f"{spec.name}: {c['COMPLETE'] + c['FAILED']}/{spec.search.budget} evaluations "
        f"({c['COMPLETE']} complete, {c['FAILED']} failed, {c['RUNNING']} running, {c['PENDING']} pending)",
        f"strategy {spec.search.strategy}, hypervolume {s['hypervolume']:.4f}",
        "best: " + ", ".join(f"{k} = {v:.6g}" for k, v in s["best"].items()),
        f"Pareto front ({len(fr.pareto)}):",
    ]
    for t in fr.pareto:
        lines.append(f"  trial {t.id}: " + ", ".join(f"{o.name} = {t.values[o.name]:.6g}" for o in problem.objectives))
    return "\n".join(lines)

