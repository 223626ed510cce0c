"""Reports of a run: trials.csv, pareto.csv, report.md, pareto.png and hv.png."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nago_spec.pareto import hypervolume, pareto_indices, to_minimization
from nago_spec.problem import ConstraintInfo, ObjectiveInfo
from nago_spec.store import TrialRecord, TrialState


@dataclass(frozen=True)
class Front:
    """The feasibility-aware Pareto front of the complete trials, and the hypervolume scale.

    ``ideal``/``ref`` bound the minimisation-space box the hypervolume is normalised to, so a run's
    hypervolume lies in [0, 1] and is comparable from one evaluation to the next.
    """

    complete: list[TrialRecord]
    pareto: list[TrialRecord]
    feasible: list[bool]
    ideal: np.ndarray
    ref: np.ndarray


def violation(values: dict[str, float], constraints: Sequence[ConstraintInfo]) -> float:
    return float(sum(c.violation(values[c.objective]) for c in constraints if c.objective in values))


def front(
    trials: Sequence[TrialRecord], objectives: Sequence[ObjectiveInfo], constraints: Sequence[ConstraintInfo]
) -> Front:
    """The front of ``trials``; its box spans their points (feasible ones, when any), plus a 10 % margin."""
    complete = [t for t in trials if t.state is TrialState.COMPLETE and t.values]
    m = len(objectives)
    if not complete:
        return Front([], [], [], np.zeros(m), np.ones(m))
    F = to_minimization([t.values for t in complete], objectives)
    viol = np.array([violation(t.values, constraints) for t in complete])
    idx = pareto_indices(F, viol)
    feasible = viol <= 0
    pool = F[feasible] if feasible.any() else F
    ideal, worst = pool.min(axis=0), pool.max(axis=0)
    span = np.where(worst > ideal, worst - ideal, np.maximum(np.abs(worst), 1.0))
    return Front(complete, [complete[i] for i in idx], list(feasible), ideal, worst + 0.1 * span)


def comparable(trials: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The trials whose values compare: all of a single-fidelity run; in a multi-fidelity run those at
    the highest budget any trial has completed so far (an error after fewer epochs or less data does
    not compare with one after more)."""
    top = max((t.budget for t in trials if t.budget is not None and t.state is TrialState.COMPLETE), default=None)
    return list(trials) if top is None else [t for t in trials if t.budget == top]


def run_front(
    trials: Sequence[TrialRecord], objectives: Sequence[ObjectiveInfo], constraints: Sequence[ConstraintInfo]
) -> Front:
    """A run's front, the one that report.md, pareto.csv, status, export, draw and ``--compare`` show:
    the front of its comparable() trials, feasibility as front() judges it."""
    return front(comparable(trials), objectives, constraints)


def normalised_hv(F: np.ndarray, fr: Front) -> float:
    """Hypervolume of minimisation-space points ``F`` (n x m) in the front's unit box."""
    if len(F) == 0:
        return 0.0
    scale = fr.ref - fr.ideal
    return float(hypervolume((F - fr.ideal) / scale, np.ones(len(fr.ideal))))


def hv_history(
    trials: Sequence[TrialRecord],
    objectives: Sequence[ObjectiveInfo],
    constraints: Sequence[ConstraintInfo],
    box: Front | None = None,
) -> list[tuple[float, float]]:
    """(evaluations spent, hypervolume of the feasible points so far), in order of completion.

    In a multi-fidelity run a trial at budget b spends b / the highest budget of an evaluation (the
    full-budget equivalents that ``[search].budget`` counts), and only the comparable() trials are
    points; so a multi-fidelity run and a single-fidelity one compare at equal training on one axis.
    ``box``: the front whose box normalises the hypervolume (default: these trials' own); give
    several runs the same one to compare them.
    """
    points_of = comparable(trials)
    fr = box if box is not None else front(points_of, objectives, constraints)
    top = max((t.budget for t in points_of if t.budget is not None), default=None)
    counted = {t.id for t in points_of}
    done = sorted(
        (t for t in trials if t.state in (TrialState.COMPLETE, TrialState.FAILED)),
        key=lambda t: (t.finished or 0.0, t.id),
    )
    points: list[np.ndarray] = []
    out = []
    spent = 0.0
    for t in done:
        spent += t.budget / top if top is not None and t.budget is not None else 1.0
        if (t.id in counted and t.state is TrialState.COMPLETE and t.values
                and violation(t.values, constraints) <= 0):
            points.append(to_minimization([t.values], objectives)[0])
        out.append((spent, normalised_hv(np.array(points).reshape(-1, len(objectives)), fr)))
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def trial_rows(
    trials: Sequence[TrialRecord], param_names: Sequence[str], objective_names: Sequence[str],
    constraints: Sequence[ConstraintInfo],
) -> list[dict[str, Any]]:
    """One row a trial: trial, state, parameters, objectives, feasibility, seconds, where it ran (host
    and device), error, and why its point stands in for the strategy's own proposal, if it does."""
    rows = []
    for t in trials:
        row: dict[str, Any] = {"trial": t.id, "state": t.state.value}
        if t.budget is not None:
            row.update({"config": t.config, "bracket": t.bracket, "rung": t.rung, "budget": t.budget})
        row.update({p: t.params.get(p, "") for p in param_names})
        values = t.values or {}
        row.update({o: values.get(o, "") for o in objective_names})
        if constraints:
            row["feasible"] = "" if not values else violation(values, constraints) <= 0
        row["seconds"] = "" if t.seconds is None else round(t.seconds, 2)
        row["host"], row["device"] = t.host or "", t.device or ""
        row["fail_reason"] = (t.error or "").splitlines()[0] if t.error else ""
        row["fallback"] = t.fallback or ""
        rows.append(row)
    return rows


def fallback_groups(notes: Mapping[int, str | None]) -> dict[str, list[int]]:
    """``{reason: trial ids}`` of the trials with a fallback ``notes[id]``, in id order."""
    out: dict[str, list[int]] = {}
    for i in sorted(notes):
        if notes[i]:
            out.setdefault(notes[i], []).append(i)
    return out


def fallback_lines(trials: Sequence[TrialRecord], strategy: str) -> list[str]:
    """report.md's (and nago status's) account of the trials whose point stands in for the strategy's
    own proposal: how many, which, and why ([] when there are none)."""
    groups = fallback_groups({t.id: t.fallback for t in trials})
    if not groups:
        return []
    n = sum(map(len, groups.values()))
    lines = [f"- fallback proposals: {n} of {len(trials)} trials are not {strategy}'s own proposal"]
    return lines + [f"  - trial{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}: {why}"
                    for why, ids in groups.items()]


def restart_lines(trials: Sequence[TrialRecord]) -> list[str]:
    """report.md's account of the trials whose training died and was restarted warmed up
    (nago_spec.train; a sample's ``train.restarted_at``); [] when there are none."""
    ids = [t.id for t in trials if any("restarted_at" in (s.get("train") or {}) for s in t.samples)]
    if not ids:
        return []
    return [f"- restarted trainings: {len(ids)} of {len(trials)} trials died in training (their loss stayed at "
            "that of a network that ignores its input) and trained again from the same start, warmed up: "
            f"trial{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"]


def write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        w.writerows(rows)


def plot_pareto(path: Path, fr: Front, objectives: Sequence[ObjectiveInfo], constraints: Sequence[ConstraintInfo]) -> None:
    """Every complete trial, the front highlighted, constraint bounds dashed (first two objectives)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=110)
    names = [o.name for o in objectives]
    if len(names) == 1:
        xs = [t.id for t in fr.complete]
        ax.scatter(xs, [t.values[names[0]] for t in fr.complete], c="0.6", s=18, label="trials")
        ax.scatter([t.id for t in fr.pareto], [t.values[names[0]] for t in fr.pareto], c="C3", s=40, label="best")
        ax.set_xlabel("trial")
        ax.set_ylabel(names[0])
    else:
        xn, yn = names[1], names[0]  # size on x, quality on y: the usual accuracy-vs-size picture
        feas = np.array(fr.feasible, dtype=bool)
        x = np.array([t.values[xn] for t in fr.complete])
        y = np.array([t.values[yn] for t in fr.complete])
        ax.scatter(x[feas], y[feas], c="0.55", s=18, label="trials")
        if (~feas).any():
            ax.scatter(x[~feas], y[~feas], c="0.75", marker="x", s=18, label="infeasible")
        px = np.array([t.values[xn] for t in fr.pareto])
        py = np.array([t.values[yn] for t in fr.pareto])
        order = np.argsort(px)
        ax.step(px[order], py[order], where="post", c="C3", lw=1)
        ax.scatter(px, py, c="C3", s=40, zorder=3, label="Pareto front")
        for c in constraints:
            for bound in (c.min, c.max):
                if bound is None:
                    continue
                if c.objective == xn:
                    ax.axvline(bound, ls="--", c="C0", lw=1, label=f"{xn} bound")
                elif c.objective == yn:
                    ax.axhline(bound, ls="--", c="C0", lw=1, label=f"{yn} bound")
        if len(x) and x.min() > 0 and x.max() / x.min() > 20:
            ax.set_xscale("log")
        ax.set_xlabel(xn)
        ax.set_ylabel(yn)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_hv(
    path: Path,
    history: list[tuple[float, float]],
    *,
    initial: int | None = None,
    others: Sequence[tuple[str, list[tuple[float, float]]]] = (),
    label: str = "this run",
    equivalents: bool = False,
) -> None:
    """Hypervolume against evaluations; ``others``: ``(label, history)`` of runs compared with this
    one (random search, another strategy), drawn in the same box; ``initial``: where the initial
    design ends; ``equivalents``: the axis counts full-budget equivalents (a multi-fidelity run)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    if history:
        n, hv = zip(*history)
        ax.plot(n, hv, c="C3", marker="o", ms=3, label=label, zorder=3)
    for k, (name, other) in enumerate(others):
        if other:
            n, hv = zip(*other)
            ax.plot(n, hv, c=f"C{k}" if k < 3 else f"C{k + 1}", ls="--", marker=".", ms=3, label=name)
    if initial and history and initial < len(history):
        ax.axvline(initial + 0.5, c="0.5", ls=":", lw=1)
        ax.annotate("initial design", (initial + 0.5, 0.02), xycoords=("data", "axes fraction"),
                    rotation=90, ha="right", va="bottom", fontsize=8, color="0.4")
    if others:
        ax.legend(loc="lower right", fontsize=8)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("evaluations (full-budget equivalents)" if equivalents else "evaluations")
    ax.set_ylabel("hypervolume (normalised" + (", a box shared by all runs)" if others else ")"))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@dataclass(frozen=True)
class Compared:
    """Another run drawn next to this one on hv.png: its label (as in the legend) and trials."""

    label: str
    trials: Sequence[TrialRecord]


def write_report(
    run_dir: Path,
    *,
    name: str,
    strategy: str,
    budget: int,
    trials: Sequence[TrialRecord],
    param_names: Sequence[str],
    objectives: Sequence[ObjectiveInfo],
    constraints: Sequence[ConstraintInfo],
    wall_seconds: float | None = None,
    initial: int | None = None,
    compare: Sequence[Compared] = (),
    fidelity: Any = None,
    out: Path | None = None,
) -> Front:
    """Write trials.csv, pareto.csv, pareto.png, hv.png and report.md into ``run_dir`` (or ``out``: a
    run directory that cannot be written, an archive, is reported elsewhere).

    ``compare``: runs of the same objectives drawn on hv.png and listed in report.md, every
    hypervolume then normalised in one box spanning all the runs' points. ``initial``: the size
    of the initial design (marked on hv.png). The front, pareto.csv and the hypervolumes are those
    of each run's comparable() trials (the highest budget completed, in a multi-fidelity run);
    ``fidelity`` (a nago_spec.fidelity.Fidelity) adds a section on the budgets to report.md.
    """
    out = run_dir if out is None else out
    onames = [o.name for o in objectives]
    # measured but not objectives: constraint-only and [search].record metrics
    extra = sorted({k for t in trials if t.values for k in t.values} - set(onames))
    every = trials
    trials = comparable(every)
    cols = ["trial", *(["config", "bracket", "rung", "budget"] if fidelity is not None else []), "state",
            *param_names, *onames, *extra]
    if constraints:
        cols.append("feasible")
    cols += ["seconds", "host", "device", "fail_reason", "fallback"]
    rows = trial_rows(every, param_names, onames + extra, constraints)
    write_csv(out / "trials.csv", rows, cols)
    fr = run_front(every, objectives, constraints)
    pareto_ids = {t.id for t in fr.pareto}
    write_csv(out / "pareto.csv", [r for r in rows if r["trial"] in pareto_ids], cols)
    plot_pareto(out / "pareto.png", fr, objectives, constraints)
    history = hv_history(every, objectives, constraints)
    joint: list[tuple[str, float, float]] = []  # (label, final hv in the joint box, evaluations spent)
    others: list[tuple[str, list[tuple[float, float]]]] = []
    # a multi-fidelity run among them: the axis counts full-budget equivalents, so that runs compare at equal training
    equivalents = any(t.budget is not None for t in [*every, *(t for c in compare for t in c.trials)])
    # where this run's initial design ends, in evaluations: not a point of a multi-fidelity run's axis
    initial = None if strategy == "random" or any(t.budget is not None for t in every) else initial
    if compare:
        box = front([*trials, *(t for c in compare for t in comparable(c.trials))], objectives, constraints)
        mine = hv_history(every, objectives, constraints, box)
        others = [(c.label, hv_history(c.trials, objectives, constraints, box)) for c in compare]
        plot_hv(out / "hv.png", mine, initial=initial, others=others,
                label=f"{run_dir.name} ({strategy})", equivalents=equivalents)
        joint = [(f"{run_dir.name} ({strategy}), this run", mine[-1][1] if mine else 0.0, mine[-1][0] if mine else 0)]
        joint += [(label, h[-1][1] if h else 0.0, h[-1][0] if h else 0) for label, h in others]
    else:
        plot_hv(out / "hv.png", history, initial=initial, equivalents=equivalents)

    states = {s: sum(t.state is s for t in every) for s in TrialState}
    lines = [
        f"# {name}",
        "",
        f"- strategy: {strategy}; budget: {budget} evaluations"
        + ("" if fidelity is None else f" (full-budget equivalents; {len(trials)} at the highest budget)"),
        "- trials: " + ", ".join(f"{n} {s.value.lower()}" for s, n in states.items() if n),
    ]
    lines += fallback_lines(every, strategy)
    lines += restart_lines(every)
    if wall_seconds is not None:
        lines.append(f"- wall time: {wall_seconds:.1f} s")
    if history:
        lines.append(f"- hypervolume (normalised, feasible points): {history[-1][1]:.4f}")
    if joint:
        lines += ["- hypervolume compared, in one box spanning every run's points (hv.png):"]
        unit = "evaluations (full-budget equivalents)" if equivalents else "evaluations"
        lines += [f"  - {label}: {hv:.4f} after {n:g} {unit}" for label, hv, n in joint]
    if constraints:
        lines.append("- constraints: " + "; ".join(_constraint_text(c) for c in constraints))
        if fr.complete and not any(fr.feasible):
            lines.append("- **no trial is feasible**: the front below lists the least violating trials")
    lines += ["", "## Pareto front", ""]
    if constraints and fr.complete and not any(fr.feasible):
        lines += ["No trial satisfies the constraints: the table shows the non-dominated trials among the "
                  "least violating ones.", ""]
    lines += _md_table([r for r in rows if r["trial"] in pareto_ids], ["trial", *onames, *extra, *param_names])
    if fidelity is not None:
        lines += _budget_section(every, fidelity)
    failed = [t for t in every if t.state is TrialState.FAILED]
    if failed:
        lines += ["", "## Failed trials", ""]
        lines += [f"- trial {t.id}: {(t.error or '').splitlines()[0] if t.error else ''}" for t in failed]
    manifest = run_dir / "models" / "manifest.json"
    if manifest.exists():
        lines += _final_section(json.loads(manifest.read_text()))
    models = "models/" if out == run_dir else f"{run_dir / 'models'}/"
    lines += ["", "Files: trials.csv, pareto.csv, pareto.png, hv.png" + (f", {models}" if manifest.exists() else ""), ""]
    (out / "report.md").write_text("\n".join(lines))
    return fr


def _budget_section(trials: Sequence[TrialRecord], fidelity: Any) -> list[str]:
    """report.md's multi-fidelity section: each bracket's rungs, and where every configuration stopped."""
    from nago_spec.fidelity import Row, stopped_at

    lines = ["", "## Budgets", "",
             (f"Hyperband with eta = {fidelity.eta}, budgets {', '.join(f'{b:g}' for b in fidelity.budgets())}; "
              "the front above is that of the highest budget. A trial is one configuration at one budget; a "
              "promotion is a new trial of the same configuration (and architectures) at the next budget."), "",
             "| bracket | rung | budget | trials | complete | failed | configurations |", "|---|---|---|---|---|---|---|"]
    keyed: dict[tuple[int, int], list[TrialRecord]] = {}
    for t in trials:
        if t.budget is not None:
            keyed.setdefault((t.bracket, t.rung), []).append(t)
    for (b, r), ts in sorted(keyed.items()):
        done = sum(t.state is TrialState.COMPLETE for t in ts)
        failed = sum(t.state is TrialState.FAILED for t in ts)
        lines.append(f"| {b} | {r} | {ts[0].budget:g} | {len(ts)} | {done} | {failed} | "
                     f"{', '.join(str(t.config) for t in ts)} |")
    rows = [Row(id=t.id, config=t.config, bracket=t.bracket, rung=t.rung, budget=t.budget, state=t.state.value)
            for t in trials if t.budget is not None]
    reached = stopped_at(fidelity, rows)
    lines += ["", "Where each configuration stopped (its highest complete budget):", ""]
    for b in sorted(set(reached.values())):
        configs = sorted(c for c, v in reached.items() if v == b)
        lines.append(f"- {b:g}: {len(configs)} configuration(s): {', '.join(map(str, configs))}")
    return lines


def _final_section(m: dict[str, Any]) -> list[str]:
    """report.md's final evaluation: mean ± std per generator point, then every exported model."""
    f = m["final"]
    aug = ", ".join(f"{k} {v}" for k, v in f["augment"].items() if v) or "none"
    lines = ["", "## Final evaluation", "",
             (f"{f['samples']} architecture(s) per point, {f['epochs']:g} epochs, "
              f"{f.get('optimizer', 'sgd')} at lr {f['lr']:g}" + (f" ({f['warmup_epochs']:g} warm-up)" if f.get("warmup_epochs") else "")
              + f", batch {f['batch_size']}, augmentation: {aug}"
              + (", on the whole training split (not [data].limit's subsample)" if f.get("full_data") else "")
              + (f", widths scaled to param_budget {f['param_budget']:,} (the searched graphs, another width: the "
                 "search's validation accuracy is of the narrower network)" if f.get("param_budget") else "")
              + "; test accuracy on the held-out test split, mean ± std "
              "over the samples."), ""]

    def pm(d: dict[str, Any], scale: float = 1.0, digits: int = 2) -> str:
        if d["mean"] is None:
            return ""
        text = f"{scale * d['mean']:.{digits}f}"
        return text + (f" ± {scale * d['std']:.{digits}f}" if d["std"] is not None else "")

    lines += _md_table(
        [{"trial": p["trial"], "samples": p["samples"], "params": pm(p["params"], digits=0),
          "test accuracy %": pm(p["test_accuracy"], 100), "val accuracy %": pm(p["val_accuracy"], 100),
          "search val accuracy %": "" if p.get("search_val_accuracy") is None else f"{100 * p['search_val_accuracy']:.2f}"}
         for p in m["points"]],
        ["trial", "samples", "params", "test accuracy %", "val accuracy %", "search val accuracy %"],
    )
    below = [p for p in m["points"] if p.get("below_search")]
    if below:
        lines += ["", (f"**The final training lost accuracy against the search** on {len(below)} of {len(m['points'])} "
                       "point(s): sample 0 retrains the very architecture the search measured, on the same validation "
                       "split, yet ends lower (trial " + ", ".join(str(p["trial"]) for p in below) + "). The final "
                       f"recipe ({f['epochs']:g} epochs, augmentation: {aug}) does not suit these networks: "
                       + ("try it without the augmentation, or with more epochs." if aug != "none" else
                          "try the search's number of epochs, or another learning rate."))]
    rows = []
    for e in m["models"]:
        row = {"file": e["file"], "params": e["params"], "test accuracy %": f"{100 * e['metrics']['test_accuracy']:.2f}",
               "max abs(ort - torch)": f"{e['parity_max_abs_diff']:.1e}"}
        for b, lat in (e.get("latency_ms") or {}).items():
            n = b.removeprefix("batch_")
            row[f"ort ms b{n}"] = f"{lat['onnxruntime']:.3f}"
            row[f"torch ms b{n}"] = f"{lat['torch']:.3f}"
            row[f"torch/ort b{n}"] = f"{lat['torch'] / lat['onnxruntime']:.2f}"
        rows.append(row)
    cols = ["file", "params", "test accuracy %"]
    if any(e.get("latency_ms") for e in m["models"]):
        cols += [f"{k} b{n}" for n in (1, 32) for k in ("ort ms", "torch ms", "torch/ort")]
    lines += ["", "## Exported models", "",
              ("ONNX files in models/ (raw pixels in, normalisation inside; see models/manifest.json). "
               "Latency: median of one forward pass, one thread, onnxruntime next to torch eager."), ""]
    lines += _md_table(rows, [*cols, "max abs(ort - torch)"])
    restarted = [e["file"] for e in m["models"] if e["metrics"].get("restarted_at") is not None]
    if restarted:
        lines += ["", ("Final trainings that died and were restarted from the same start, warmed up: "
                       + ", ".join(restarted) + " (manifest.json: `metrics.restarted_at`).")]
    lines += _quantized_section(m["models"])
    if m["failed"]:
        lines += ["", "Failed final trainings:", ""]
        lines += [f"- trial {x['trial']} sample {x['sample']}: {x['error'].splitlines()[0]}" for x in m["failed"]]
    return lines


def _quantized_section(models: list[dict[str, Any]]) -> list[str]:
    """report.md's quantised twins: each beside its float32 parent, measured on the same images."""
    rows, failed = [], []
    for e in models:
        for scheme, q in (e.get("quantized") or {}).items():
            if "error" in q:
                failed.append(f"- {e['file']} ({scheme}): {q['error'].splitlines()[0]}")
                continue
            row = {"file": q["file"], "scheme": scheme, "float32 test %": f"{100 * q['float32_test_accuracy']:.2f}",
                   "test %": f"{100 * q['test_accuracy']:.2f}", "drop (points)": f"{100 * q['accuracy_drop']:.2f}",
                   "agreement %": f"{100 * q['agreement']:.2f}", "kB": f"{q['size_bytes'] / 1000:.1f}",
                   "size / float32": f"{q['size_ratio']:.2f}"}
            for b, lat in (q.get("latency_ms") or {}).items():
                n = b.removeprefix("batch_")
                row[f"ms b{n}"] = f"{lat[scheme]:.3f}"
                row[f"float32 ms b{n}"] = f"{lat['float32']:.3f}"
            rows.append(row)
    if not rows and not failed:
        return []
    cols = ["file", "scheme", "float32 test %", "test %", "drop (points)", "agreement %", "kB", "size / float32"]
    if any("ms b1" in r for r in rows):
        cols += ["ms b1", "float32 ms b1", "ms b32", "float32 ms b32"]
    lines = ["", "## Quantised models", "",
             ("Beside each float32 model (models/manifest.json, `quantized`): test accuracy of both in "
              "onnxruntime, the drop, top-1 agreement with the float32 model on the test set, file size, "
              "and onnxruntime latency (one thread, median) of both, timed together."), ""]
    lines += _md_table(rows, cols)
    if failed:
        lines += ["", "Not quantised (the float32 models are kept):", "", *failed]
    return lines


def _constraint_text(c: ConstraintInfo) -> str:
    parts = []
    if c.min is not None:
        parts.append(f"{c.objective} >= {_fmt(c.min)}")
    if c.max is not None:
        parts.append(f"{c.objective} <= {_fmt(c.max)}")
    return " and ".join(parts)


def _md_table(rows: list[dict[str, Any]], cols: Sequence[str]) -> list[str]:
    if not rows:
        return ["(none)"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    return out

