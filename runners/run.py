"""The run loop: propose with the strategy, evaluate on a backend, store every trial, report, export."""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import socket
import statistics
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nago_spec.device import (
    DeviceError,
    Machine,
    Placement,
    default_workers,
    local_binding,
    machine,
    resolve_device,
    resolve_precision,
    worker_bindings,
)
from nago_spec.errors import NagoError, SpecError, StoreError
from nago_spec.fidelity import Row, next_jobs, planned_trials
from nago_spec.pareto import to_minimization
from nago_spec.pipeline import DataShape, Evaluator, sample_noise
from nago_spec.report import (
    Compared,
    Front,
    fallback_groups,
    fallback_lines,
    normalised_hv,
    run_front,
    violation,
    write_report,
)
from nago_spec.spec import Spec, changed_keys, dump_toml, load_spec
from nago_spec.store import Outcome, Store, TrialRecord, TrialState
from nago_spec.strategies import STRATEGIES
from nago_spec.warm import warm_trials
from nago_spec.runners import worker
from nago_spec.runners.backends import Backend, TrialTimeout, WorkerLost, WorkerStartFailed, make_backend
from nago_spec.runners.lock import describe_owner, owner, owning
from nago_spec.runners.progress import Progress

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
    device: str | None = None
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
    if opts.device is not None:
        o.setdefault("run", {})["device"] = opts.device
    return o


def prepare_run_dir(spec: Spec, run_dir: Path, force_new: bool) -> Path:
    """Create or check ``run_dir`` and write the resolved spec.toml there (what status, report, export
    and a resume read); returns its path. RunBusy, before anything is touched, when another live
    process runs or exports the directory."""
    with owning(run_dir, "run"):  # taken and given back at once, unless this process holds it
        pass
    run_dir.mkdir(parents=True, exist_ok=True)
    db = run_dir / "study.db"
    if db.exists() and force_new:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        models = run_dir / "models"
        if models.is_dir():  # the discarded run's models are kept, as a changed [export] keeps them
            set_aside(models, sorted(models.glob("*.onnx")))
            (models / "manifest.json").unlink(missing_ok=True)
    if db.exists():
        with Store(db) as store:
            old = store.get_meta("resume_key")
        if old is not None and old != spec.key("resume"):
            changed = changed_keys(json.loads(old), json.loads(spec.key("resume"))) or ["?"]
            raise StoreError(
                f"{run_dir} holds a run of a different search (changed: {', '.join(changed)}); "
                "use --force-new to start over or --out for another directory"
            )
    spec_file = run_dir / "spec.toml"
    spec_file.write_text(dump_toml(spec))
    return spec_file


def run(spec_path: Path | Spec, opts: RunOptions = RunOptions()) -> Path:
    """Run (or resume) the search a spec (a file, or a Spec already loaded) declares; returns the run
    directory."""
    if isinstance(spec_path, Spec):
        spec = spec_path.with_overrides(overrides(opts)) if overrides(opts) else spec_path
    else:
        spec = load_spec(spec_path, overrides(opts) or None)
    shown = str(spec.path) if isinstance(spec_path, Spec) else str(spec_path)
    spec.require_callables()
    placement = placement_of(spec, shown)  # a device the machine lacks stops here, before any trial
    warm = warm_trials(spec)  # as would an incompatible warm-start run
    run_dir = (opts.out or Path("runs") / spec.name).resolve()
    with owning(run_dir, "run"):  # a second run or export of the directory is refused while this one lives
        _run(spec, placement, warm, run_dir, opts)
    return run_dir


def _run(spec: Spec, placement: Placement, warm: list, run_dir: Path, opts: RunOptions) -> None:
    prepare_run_dir(spec, run_dir, opts.force_new)
    started = time.time()
    data = worker.load_data(spec)
    shape = DataShape.of(data) if data is not None else None
    evaluator = Evaluator(spec, run_dir)
    problem = evaluator.problem(shape)
    strategy = STRATEGIES.get(spec.search.strategy)(
        problem, seed=spec.seed, initial=spec.search.initial, batch=spec.search.batch, options=spec.search.options
    )
    backend = backend_of(spec, placement, warmup=(worker.prepare, (spec, str(run_dir))))
    total = spec.search.budget
    if spec.search.fidelity is not None:
        total = planned_trials(spec.search.fidelity, spec.search.budget)
    progress = Progress(opts.mode, total=total, objectives=problem.objectives)
    try:
        with Store(run_dir / "study.db") as store:
            clock = WallClock(store, started)
            store.set_meta("resume_key", spec.key("resume"))
            store.set_meta("spec_hash", spec.key("search"))
            requeued = store.requeue_running()
            if requeued:
                log.info("re-queued trials left running by a stopped run: %s", requeued)
            for t in store.trials():
                if t.state in (TrialState.COMPLETE, TrialState.FAILED):
                    complete = t.state is TrialState.COMPLETE
                    strategy.tell(t.id, t.params, t.values if complete else None,
                                  sample_noise(t.samples) if complete else None, budget=t.budget)
            for i, w in enumerate(warm):  # ids below 0: never this run's
                strategy.tell(-1 - i, w.params, w.values, sample_noise(w.samples))
            if warm:
                progress.message(f"warm start: {len(warm)} completed trial(s) of "
                                 f"{', '.join(str(p) for p in spec.search.warm_start)}")
            _search(spec, run_dir, store, strategy, backend, progress, problem, clock)
            trials = store.trials()
            fr = _report(spec, run_dir, trials, problem, clock())
            chosen = export_selection(spec, fr, problem)
            if spec.space.kind != "params" and spec.export.onnx and chosen:
                export_models(spec, run_dir, chosen, backend, problem, store, progress, clock)
                _report(spec, run_dir, trials, problem, clock())
    finally:
        progress.close()
        backend.close()
    progress.message(f"run directory: {run_dir}")


class WallClock:
    """A run's wall time over all its sessions. Each call adds this session's time so far to what
    earlier sessions spent and saves the sum in the store, so a killed session's time is kept."""

    def __init__(self, store: Store, started: float):
        self.store = store
        self.started = started
        self.before = float(store.get_meta("wall_seconds") or 0.0)

    def __call__(self) -> float:
        wall = self.before + (time.time() - self.started)
        self.store.set_meta("wall_seconds", str(wall))
        return wall


def placement_of(spec: Spec, shown: str | None = None, m: Machine | None = None) -> Placement:
    """Where the spec's networks train: ``[run].device`` resolved on this machine ``m`` (default: what
    torch sees here), and ``[train].precision`` checked against it.

    On Ray the GPUs are the cluster's, not this machine's: "auto" means the GPU a trial claims
    (``num_gpus > 0``), else the CPU, and "cuda" needs such a claim. Plain-parameter specs train
    nothing and run anywhere. Raises SpecError, one line naming the key and what torch sees.
    """
    r = spec.run
    where = shown or str(spec.path)

    def refuse(key: str, value: Any, why: str) -> SpecError:  # key: "[section].name"
        return SpecError(f"{where}: {key} = {json.dumps(value)}: {why}")

    if spec.space.kind == "params":
        return Placement("cpu")
    if r.backend == "ray":
        kind = r.device.partition(":")[0]
        if r.device.startswith("cuda:") or kind == "mps":
            raise refuse("[run].device", r.device, 'on Ray a trial trains on the GPU Ray assigns it: use "auto" or '
                         '"cuda" with [run].num_gpus > 0')
        if kind == "cuda" and r.num_gpus <= 0:
            raise refuse("[run].device", r.device, "on Ray a trial trains on the GPU it claims: set [run].num_gpus "
                         "> 0 (a fraction packs several trials on one GPU)")
        placement = Placement("cuda" if kind != "cpu" and r.num_gpus > 0 else "cpu")
        bf16 = True  # the cluster's GPUs are not seen from here; a trial checks its own
    else:
        m = m or machine(details=spec.train.precision == "bf16")  # only bf16 asks the GPU itself
        try:
            placement = resolve_device(r.device, m)
        except DeviceError as exc:
            raise refuse("[run].device", r.device, str(exc)) from None
        bf16 = m.bf16
    try:
        precision = resolve_precision(spec.train.precision, placement.kind, bf16)
    except DeviceError as exc:
        raise refuse("[train].precision", spec.train.precision, str(exc)) from None
    return dataclasses.replace(placement, precision=precision)


def backend_of(spec: Spec, placement: Placement | None = None, warmup=None) -> Backend:
    """The spec's backend, its workers bound to ``placement``'s devices (default: placement_of(spec)),
    each running ``warmup`` (nago_spec.runners.backends.Warmup) before its first call."""
    r = spec.run
    placement = placement or placement_of(spec)
    if r.backend == "ray":
        return make_backend("ray", r.workers, address=r.address, num_cpus=r.num_cpus, num_gpus=r.num_gpus,
                            use_gpu=placement.kind == "cuda", warmup=warmup)
    if r.backend == "local":
        return make_backend("local", 1, binding=local_binding(placement), warmup=warmup)
    workers = r.workers or default_workers(placement, r.workers_per_device, os.cpu_count())
    return make_backend(r.backend, workers, bindings=worker_bindings(placement, workers), warmup=warmup)


def _report(spec: Spec, run_dir: Path, trials: list[TrialRecord], problem, wall: float,
            compare: Sequence[Compared] = (), out: Path | None = None):
    return write_report(
        run_dir, name=spec.name, strategy=spec.search.strategy, budget=spec.search.budget, trials=trials,
        param_names=problem.space.names, objectives=problem.objectives, constraints=problem.constraints,
        wall_seconds=wall, initial=spec.search.initial, compare=compare,
        fidelity=spec.search.fidelity, out=out,
    )


def _search(spec, run_dir: Path, store: Store, strategy, backend: Backend, progress: Progress, problem,
            clock: Callable[[], float] | None = None) -> None:
    """Keep every worker busy until ``budget`` trials are finished (COMPLETE or FAILED).

    A trial whose worker died (WorkerLost) goes back to the front of the queue, at most
    ``run.max_retries`` times; one that ran past ``run.trial_timeout`` fails (a hang would recur).
    With ``search.synchronous`` the strategy is asked only when no trial runs, and told a batch's
    results in trial order once all are in: what it sees, and so what it proposes, does not depend
    on the number of workers or on which trial finished first.
    """
    synchronous = spec.search.synchronous
    untold: list[tuple[int, dict[str, Any]]] = []  # synchronous: the batch's results, told when all are in
    all_trials = {t.id: t for t in store.trials()}
    queue = deque(t.id for t in all_trials.values() if t.state is TrialState.PENDING)
    running: dict[Future, int] = {}
    retries = Retries(spec.run.max_retries, store)
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.FAILED) for t in all_trials.values())
    progress.start(finished, _summary(store, problem))
    while True:
        while len(running) < backend.workers:
            if not queue and synchronous and running:
                break  # the next batch waits for this one
            if not queue:
                pending = [(i, all_trials[i].params) for i in list(running.values())]
                added = _propose(spec, store, strategy, problem, pending, backend.workers - len(running))
                if not added:
                    break
                queue.extend(added)
                all_trials = {t.id: t for t in store.trials()}
                for why, ids in fallback_groups({i: all_trials[i].fallback for i in added}).items():
                    progress.message(f"trial{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}: {why}")
            tid = queue.popleft()
            store.mark_running(tid, host=socket.gethostname())
            t = all_trials[tid]
            fut = backend.submit(worker.evaluate_trial, spec, str(run_dir), tid, t.params, t.budget,
                                 t.config, timeout=spec.run.trial_timeout)
            running[fut] = tid
            progress.running(len(running))
        if not running:
            break
        done, _ = wait(list(running), return_when=FIRST_COMPLETED)
        for fut in sorted(done, key=lambda f: running[f]):
            tid = running.pop(fut)
            out, retry = retries.settle(f"trial {tid}", fut)
            if out is None:
                store.requeue(tid, retry)
                queue.appendleft(tid)
                progress.message(f"trial {tid}: {retry}")
                continue
            store.finish(tid, out)
            untold.append((tid, out))
            if not synchronous or not (running or queue):
                for i, o in sorted(untold, key=lambda x: x[0]):
                    t = all_trials[i]
                    strategy.tell(i, t.params, o.values if o.ok else None,
                                  sample_noise(o.samples) if o.ok else None, budget=t.budget)
                untold.clear()
            if clock is not None:
                clock()
            progress.finished(tid, out, len(running), _summary(store, problem))


class Retries:
    """The one failure policy of a run's jobs, trials and final models alike.

    A job whose worker died (WorkerLost: killed, segfault, out of host memory) is re-queued up to
    ``max_retries`` times, then failed; its deaths are counted in the store (when given), so a
    resumed run goes on counting. One that ran past its time limit (TrialTimeout) fails at once, as
    a hang would recur. Anything else the backend raises fails that job alone, except
    WorkerStartFailed: no job can run, so it stops the run (the jobs in flight are left to resume).
    """

    def __init__(self, max_retries: int, store: Store | None = None):
        self.max_retries = max_retries
        self.store = store
        self.lost: dict[str, int] = {}  # job -> workers that died under it (without a store: in this process)

    def settle(self, job: str, fut: Future) -> tuple[Outcome | None, str | None]:
        """``(outcome, None)`` for a finished ``job`` ("trial 3", "final ... trial 3 sample 0"), or
        ``(None, why)`` when it is to be re-queued."""
        try:
            return fut.result(), None
        except WorkerLost as exc:
            if self.store is not None:
                n = self.store.add_lost_worker(job)
            else:
                n = self.lost[job] = self.lost.get(job, 0) + 1
            if n <= self.max_retries:
                return None, f"{exc}; re-queued ({n} of {self.max_retries} retries)"
            return Outcome.failed(f"{exc} ({n} time(s); max_retries = {self.max_retries})"), None
        except TrialTimeout as exc:
            return Outcome.failed(str(exc)), None
        except WorkerStartFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - the backend's failure is this job's, not the run's
            return Outcome.failed(f"{type(exc).__name__}: {exc}"), None


def _propose(spec: Spec, store: Store, strategy, problem, pending: list, free: int) -> list[int]:
    """Add the next trials to the store and return their ids ([] when the budget is spent).

    Single fidelity: ``search.batch`` new points while fewer than ``search.budget`` trials exist.
    Multi-fidelity: the Hyperband jobs nago_spec.fidelity.next_jobs hands out for the free
    workers (at least ``search.batch`` when a bracket opens), promotions first, then the new
    configurations the strategy proposes; the budget counts full-budget equivalents.
    """
    start = store.next_trial_id()
    fid = spec.search.fidelity
    if fid is None:
        n = min(spec.search.batch, spec.search.budget - start)
        if n <= 0:
            return []
        params = strategy.ask(n, next_trial_id=start, pending=pending)
        return store.add_trials(start, params, fallbacks=getattr(strategy, "fallbacks", None))
    trials = store.trials()
    rows = fidelity_rows(trials, problem)
    spent = sum(fid.cost(t.budget) for t in trials if t.budget is not None)
    # synchronous: a batch's size must not depend on the number of workers
    wanted = spec.search.batch if spec.search.synchronous else max(free, spec.search.batch)
    jobs = next_jobs(fid, rows, wanted, spec.search.budget - spent)
    if not jobs:
        return []
    by_config = {t.id: t for t in trials}
    promoted = [j for j in jobs if j.config is not None]
    new = [j for j in jobs if j.config is None]
    params = [by_config[j.config].params for j in promoted]
    fallbacks = None
    if new:
        params += strategy.ask(len(new), next_trial_id=start + len(promoted), pending=pending)
        fallbacks = getattr(strategy, "fallbacks", None)
    rungs = [{"config": j.config, "bracket": j.bracket, "rung": j.rung, "budget": j.budget} for j in promoted + new]
    return store.add_trials(start, params, rungs, fallbacks)


def fidelity_rows(trials: Sequence[TrialRecord], problem) -> list[Row]:
    """The stored trials as the Hyperband planner reads them (multi-fidelity trials only)."""
    rows = []
    for t in trials:
        if t.budget is None:
            continue
        complete = t.state is TrialState.COMPLETE and t.values is not None
        rows.append(Row(
            id=t.id, config=t.config, bracket=t.bracket, rung=t.rung, budget=t.budget, state=t.state.value,
            f=tuple(to_minimization(t.values, problem.objectives)) if complete else None,
            feasible=not complete or violation(t.values, problem.constraints) <= 0,
        ))
    return rows


def _summary(store: Store, problem) -> dict[str, Any]:
    """Counts, best value per objective (with its trial) and hypervolume, for the progress display and
    status; of the run's front (run_front)."""
    trials = store.trials()
    counts = {s.value: sum(t.state is s for t in trials) for s in TrialState}
    fr = run_front(trials, problem.objectives, problem.constraints)
    best, best_trial = {}, {}
    feasible = [t for t, ok in zip(fr.complete, fr.feasible) if ok]
    for o in problem.objectives:
        if feasible:
            sign = 1 if o.direction == "minimize" else -1
            t = min(feasible, key=lambda t: (sign * t.values[o.name], t.id))
            best[o.name], best_trial[o.name] = t.values[o.name], t.id
    hv = normalised_hv(to_minimization([t.values for t in feasible], problem.objectives), fr) if feasible else 0.0
    return {"counts": counts, "best": best, "best_trial": best_trial, "hypervolume": hv}


def export_selection(spec: Spec, fr: Front, problem) -> list[TrialRecord]:
    """The generator points of the final evaluation, best first by ``export.order_by``.

    ``select = "pareto"``: the Pareto set; ``"top"``: every complete trial, feasible ones only when
    any is. At most ``export.max_models``. ``export.trials``, where given, names the points instead,
    all of them in its order; one that is not a complete trial of the run is a SpecError.
    """
    if spec.export.trials:
        by_id = {t.id: t for t in fr.complete}
        missing = [i for i in spec.export.trials if i not in by_id]
        if missing:
            raise SpecError(f"{spec.path}: [export].trials = {json.dumps(list(spec.export.trials))}: "
                            f"no complete trial {', '.join(map(str, missing))} in this run "
                            f"(complete: {_id_ranges(sorted(by_id))})")
        return [by_id[i] for i in spec.export.trials]
    names = [o.name for o in problem.objectives]
    col = names.index(spec.export.order_by) if spec.export.order_by else 0
    if spec.export.select == "pareto":
        pool = fr.pareto
    else:
        pool = [t for t, ok in zip(fr.complete, fr.feasible) if ok] or list(fr.complete)
    ordered = sorted(pool, key=lambda t: (to_minimization([t.values], problem.objectives)[0][col], t.id))
    return ordered[: spec.export.max_models] if spec.export.max_models else ordered


def _id_ranges(ids: Sequence[int]) -> str:
    """Sorted trial numbers as ranges: [0, 1, 2, 5, 7, 8] -> "0-2, 5, 7-8"; "none" when empty."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs) or "none"


def models_to_train(spec: Spec, chosen: list[TrialRecord], done: dict[tuple[int, int], Any]
                    ) -> list[tuple[TrialRecord, int]]:
    """The ``(point, sample)`` final models of ``chosen`` that no row of ``done`` (Store.finals) records."""
    return [(t, k) for t in chosen for k in range(spec.export.samples) if (t.id, k) not in done]


def export_models(spec: Spec, run_dir: Path, chosen: list[TrialRecord], backend: Backend | None,
                  problem, store: Store, progress: Progress | None = None,
                  clock: Callable[[], float] | None = None) -> dict[str, Any]:
    """Final training, test and ONNX export of ``export.samples`` architectures of each ``chosen``
    point, into ``run_dir/models``; writes and returns manifest.json. A stopped export (Ctrl-C, SIGTERM)
    writes the manifest of the models it finished, their ``missing`` ones listed, before it stops.

    ``backend`` may be None when every model is already recorded (nothing to train).

    Each finished model is recorded in the store at once, so a killed export resumes with the
    models still missing; rows of other settings (``spec.key("export")``) are ignored and their files
    set aside in models/superseded/ (:func:`set_aside`) before any is replaced. A model whose worker
    died is re-queued up to ``run.max_retries`` times.
    """
    models_dir = run_dir / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    key = spec.key("export")
    done = store.finals(key)
    # the models listed before that this export does not keep (another [export]'s, or points no longer
    # chosen) go aside before any file is replaced; a retrained model of this export replaces its own
    earlier = _read_manifest(models_dir)
    wanted = {(t.id, k) for t in chosen for k in range(spec.export.samples)}
    mine = {f for tk, row in done.items() if tk in wanted and row["entry"] for f in model_files(row["entry"])}
    stale = [models_dir / f for m in earlier.get("models", []) for f in model_files(m)
             if f not in mine and (earlier.get("export_key") != key or (m["trial"], m["sample"]) not in wanted)]
    aside = set_aside(models_dir, [f for f in stale if f.exists()])
    if aside and progress is not None:
        progress.message(f"{aside} model file(s) this export does not keep moved to {models_dir / SUPERSEDED}")
    queue = deque(models_to_train(spec, chosen, done))
    if queue and progress is not None:
        progress.message(f"final training of {len(queue)} model(s): {spec.export.samples} per point, "
                         f"{len(chosen)} point(s)")
    running: dict[Future, tuple[TrialRecord, int]] = {}
    retries = Retries(spec.run.max_retries, store)
    try:
        while queue or running:
            while queue and len(running) < backend.workers:
                t, k = queue.popleft()
                fut = backend.submit(worker.final_train_export, spec, str(run_dir), t.id, t.params, k,
                                     str(models_dir / f"trial_{t.id}_s{k}.onnx"), t.config)
                running[fut] = (t, k)
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                t, k = running.pop(fut)
                out, retry = retries.settle(f"final {key} trial {t.id} sample {k}", fut)
                if out is None:
                    queue.appendleft((t, k))
                    if progress is not None:
                        progress.message(f"trial {t.id} sample {k}: {retry}")
                    continue
                if out.ok and not _finite(out.entry["metrics"]):
                    out = Outcome.failed(f"non-finite metrics: {out.entry['metrics']}")
                if out.ok:
                    store.save_final(t.id, k, key, {**out.entry, "objectives": t.values})
                    if progress is not None:
                        m = out.entry["metrics"]
                        progress.message(f"trial {t.id} sample {k}: test accuracy {m['test_accuracy']:.4f}, "
                                         f"{out.entry['params']} params")
                else:
                    store.save_final(t.id, k, key, None, out.error)
                    log.error("final training of trial %d sample %d failed: %s", t.id, k, out.error)
                if clock is not None:
                    clock()
    except BaseException:  # Ctrl-C, SIGTERM, a failure: the models finished so far are deployable now
        _write_json(models_dir / "manifest.json", build_manifest(spec, chosen, store.finals(key), problem, key))
        raise
    manifest = build_manifest(spec, chosen, store.finals(key), problem, key)
    keep = {f for m in manifest["models"] for f in model_files(m)}
    # files no manifest lists (a worker killed after writing its file): kept, out of the way
    set_aside(models_dir, [f for f in models_dir.glob("*.onnx") if f.name not in keep])
    _write_json(models_dir / "manifest.json", manifest)
    return manifest


def _read_manifest(models_dir: Path) -> dict[str, Any]:
    """models/manifest.json, or {} where there is none (or only an unreadable one)."""
    try:
        return json.loads((models_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically: a reader (or a kill) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


#: Where models/ keeps the models of earlier [export] settings that the current manifest does not list.
SUPERSEDED = "superseded"


def set_aside(models_dir: Path, files: list[Path]) -> int:
    """Move ``files`` (models the new manifest does not list) into ``models/superseded/``, with their
    entries of the manifest they came from in ``superseded/manifest.json``; returns how many moved.

    An exported model is never deleted unless a new one replaces it: a later file of the same name,
    here or in superseded/, replaces it and its entry."""
    if not files:
        return 0
    old = _read_manifest(models_dir)
    of_file = {f: m for m in old.get("models", []) for f in model_files(m)}
    settings = {k: old[k] for k in ("spec_hash", "export_key", "selection", "ordered_by", "final") if k in old}
    aside = models_dir / SUPERSEDED
    aside.mkdir(exist_ok=True)
    index_path = aside / "manifest.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"models": []}
    moved = {f.name for f in files}
    entries = [m for m in index["models"] if not moved & set(model_files(m))]
    seen: set[str] = set()
    for f in files:
        m = of_file.get(f.name)
        if m is not None and m["file"] not in seen:
            seen.add(m["file"])
            entries.append({**m, **settings})
        os.replace(f, aside / f.name)
    index["models"] = entries
    _write_json(index_path, index)
    return len(files)


def model_files(entry: Mapping[str, Any]) -> list[str]:
    """The files of one manifest entry: the float32 model and its quantised twins."""
    twins = entry.get("quantized") or {}
    return [entry["file"], *(t["file"] for t in twins.values() if "file" in t)]


def _finite(metrics: dict[str, Any]) -> bool:
    return all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))


def build_manifest(spec: Spec, chosen: list[TrialRecord], finals: dict[tuple[int, int], dict[str, Any]],
                   problem, key: str) -> dict[str, Any]:
    """models/manifest.json: one entry per model, a mean ± std summary per generator point."""
    e, f = spec.export, spec.final_train()
    models, failed, points = [], [], []
    for t in chosen:
        rows = [finals.get((t.id, k)) for k in range(e.samples)]
        mine = [r["entry"] for r in rows if r is not None and r["entry"] is not None]
        failed += [{"trial": t.id, "sample": k, "error": r["error"]}
                   for k, r in enumerate(rows) if r is not None and r["entry"] is None]
        models += mine
        points.append({
            "trial": t.id,
            "generator_params": t.params,
            "objectives": t.values,
            "samples": len(mine),
            "files": [m["file"] for m in mine],
            "params": _mean_std([m["params"] for m in mine]),
            "test_accuracy": _mean_std([m["metrics"]["test_accuracy"] for m in mine]),
            "val_accuracy": _mean_std([m["metrics"]["val_accuracy"] for m in mine]),
            **_against_search(t, mine, comparable=not e.full_data and e.param_budget is None),
        })
    return {
        "spec": spec.name,
        "spec_hash": spec.key("search"),
        "export_key": key,
        "selection": e.select,
        "ordered_by": e.order_by or problem.objectives[0].name,
        "final": {
            "epochs": f.epochs,
            "samples": e.samples,
            "optimizer": f.optimizer,
            "batch_size": f.batch_size,
            "lr": f.lr,
            "weight_decay": f.weight_decay,
            "warmup_epochs": f.warmup_epochs,
            "label_smoothing": f.label_smoothing,
            "augment": {"crop_padding": f.crop_padding, "flip": f.flip, "cutout": f.cutout},
            "full_data": e.full_data,
            "param_budget": e.param_budget,
            "opset": e.opset,
        },
        "points": points,
        "models": models,
        "failed": failed,
        # models not trained yet: an export stopped part way (`nago export DIR` continues it)
        "missing": [{"trial": t.id, "sample": k} for t in chosen for k in range(e.samples)
                    if (t.id, k) not in finals],
    }


#: A final model's validation accuracy this far below the search's measurement of the same architecture
#: (sample 0) flags the final recipe as unsuited to it (report.md says so); less is within the noise of
#: two trainings on a small validation split (the quickstart's 287 images: 1 image is 0.35 points).
BELOW_SEARCH = 0.02


def _against_search(t: TrialRecord, models: list[dict[str, Any]], comparable: bool = True) -> dict[str, Any]:
    """The search's validation accuracy of the architecture the final training's sample 0 retrained, and
    whether the final recipe fell below it (more epochs and augmentation should not lose accuracy on
    the same validation split; when they do, the augmentation usually does not suit the network or
    the image size). Not ``comparable`` (``[export].full_data``: another validation split;
    ``[export].param_budget``: another width of the graphs): no verdict."""
    searched = [smp.get("train", {}).get("val_accuracy") for smp in t.samples[:1]]
    final = [m["metrics"]["val_accuracy"] for m in models if m["sample"] == 0]
    if not searched or searched[0] is None or not final:
        return {}
    below = final[0] < searched[0] - BELOW_SEARCH if comparable else None
    return {"search_val_accuracy": searched[0], "below_search": below}


def _mean_std(values: list[float]) -> dict[str, float | None]:
    """Mean and sample standard deviation (None with fewer than two values)."""
    if not values:
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None}


def export_run(run_dir: Path, mode: str = "auto", force: bool = False) -> Path:
    """``nago export DIR``: the final training and export of a finished run, continuing an interrupted
    one; ``force`` retrains every model."""
    spec, _ = _open_run(run_dir)
    if spec.space.kind == "params":
        raise StoreError(f"{run_dir}: a plain-parameter run has no networks to export")
    with owning(run_dir, "export"):
        return _export_run(spec, run_dir, mode, force)


def _export_run(spec: Spec, run_dir: Path, mode: str, force: bool) -> Path:
    data = worker.load_data(spec)
    problem = Evaluator(spec, run_dir).problem(DataShape.of(data) if data is not None else None)
    progress = Progress(mode, total=0, objectives=problem.objectives)
    backend = None
    try:
        with Store(run_dir / "study.db") as store:
            if force:
                store.clear_finals()
            trials = store.trials()
            wall = float(store.get_meta("wall_seconds") or 0)
            fr = run_front(trials, problem.objectives, problem.constraints)
            chosen = export_selection(spec, fr, problem)
            done = store.finals(spec.key("export"))
            wanted = len(chosen) * spec.export.samples
            missing = models_to_train(spec, chosen, done)
            failed = sum(done[t.id, k]["entry"] is None for t in chosen for k in range(spec.export.samples)
                         if (t.id, k) in done)
            progress.message(
                f"{wanted - len(missing) - failed} of {wanted} model(s) already exported"
                + (f", {failed} failed before (--force retrains every model)" if failed else "")
                + (f"; training {len(missing)}" if missing else "; nothing to train"))
            if missing:  # a pool of workers only where there is work for it
                backend = backend_of(spec, warmup=(worker.prepare, (spec, str(run_dir))))
            export_models(spec, run_dir, chosen, backend, problem, store, progress)
        _report(spec, run_dir, trials, problem, wall)
    finally:
        progress.close()
        if backend is not None:
            backend.close()
    return run_dir / "models" / "manifest.json"


def report_run(run_dir: Path, compare: Sequence[Path] = (), out: Path | None = None) -> Path:
    """``nago report DIR [--compare OTHER ...] [--out FOLDER]``: rewrite the report files from the
    store, in ``run_dir`` or in ``out`` (created; the run directory is then only read).

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
        with Store(other / "study.db", readonly=True) as store:
            others.append(Compared(f"{other.name} ({ospec.search.strategy})", store.trials()))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    with Store(run_dir / "study.db", readonly=True) as store:
        _report(spec, run_dir, store.trials(), problem, float(store.get_meta("wall_seconds") or 0), others, out)
    return (out or run_dir) / "report.md"


def _open_run(run_dir: Path):
    """``(spec, problem)`` of an existing run directory."""
    spec_file = run_dir / "spec.toml"
    if not (run_dir / "study.db").exists() or not spec_file.exists():
        raise StoreError(f"{run_dir}: not a run directory (no study.db / spec.toml)")
    spec = load_spec(spec_file)
    return spec, Evaluator(spec, run_dir).problem(None)


def _where_text(trials: Sequence[TrialRecord]) -> list[str]:
    """The hosts and devices the finished trials ran on, with their counts ([] for a run stored
    before the device was recorded)."""
    seen = collections.Counter(f"{t.host} {t.device}" for t in trials if t.device and t.finished is not None)
    if not seen:
        return []
    return ["ran on: " + ", ".join(f"{where} ({n} trial{'s' if n > 1 else ''})" for where, n in sorted(seen.items()))]


def _live_text(run_dir: Path, counts: dict[str, int]) -> str:
    """Whether a process runs the directory now (its lock), and what that means for its trials."""
    live = owner(run_dir)
    if live is not None:
        return f"live: {describe_owner(live)}"
    if counts["RUNNING"] or counts["PENDING"]:
        return "not running: stopped before its end; `nago run` with its spec resumes it"
    return "not running"


def status_text(run_dir: Path) -> str:
    """``nago status DIR``: one screen on where a run stands."""
    spec, problem = _open_run(run_dir)
    with Store(run_dir / "study.db", readonly=True) as store:
        s = _summary(store, problem)
        trials = store.trials()
    fr = run_front(trials, problem.objectives, problem.constraints)
    c = s["counts"]
    planned = spec.search.budget
    if spec.search.fidelity is not None:
        planned = planned_trials(spec.search.fidelity, spec.search.budget)
    lines = [
        (f"{spec.name}: {c['COMPLETE'] + c['FAILED']}/{planned} evaluations "
         f"({c['COMPLETE']} complete, {c['FAILED']} failed, {c['RUNNING']} running, {c['PENDING']} pending)"),
        f"strategy {spec.search.strategy}, hypervolume {s['hypervolume']:.4f}",
        _live_text(run_dir, c),
        *_where_text(trials),
        *(line.removeprefix("- ") for line in fallback_lines(trials, spec.search.strategy)),
        "best: " + (", ".join(f"{k} = {v:.6g} (trial {s['best_trial'][k]})" for k, v in s["best"].items())
                    or "none yet (no trial complete)"),
        f"Pareto front ({len(fr.pareto)}):",
    ]
    for t in fr.pareto:
        lines.append(f"  trial {t.id}: " + ", ".join(f"{o.name} = {t.values[o.name]:.6g}" for o in problem.objectives))
    return "\n".join(lines)

