"""End to end: a tiny spec through search, store, report and ONNX export; resume; failures as data."""

from __future__ import annotations

import csv
import json
import socket
import textwrap

import numpy as np
import onnx
import pytest

from nago_spec.errors import StoreError
from nago_spec.export import onnx_session
from nago_spec.store import Store, TrialState
from nago_spec.runners.cli import main
from nago_spec.runners.run import RunOptions, run


def _values(run_dir):
    with Store(run_dir / "study.db") as s:
        return {t.id: (t.params, t.values, t.state) for t in s.trials()}


def test_tiny_spec_end_to_end(tiny_spec, tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(tiny_spec), "--out", str(out), "--progress", "plain"]) == 0
    for name in ("study.db", "spec.toml", "trials.csv", "pareto.csv", "report.md", "pareto.png", "hv.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 4 and {r["state"] for r in rows} == {"COMPLETE"}
    assert {"top.nodes", "top.p", "mid.nodes", "bottom.p", "error", "params"} <= set(rows[0])
    manifest = json.loads((out / "models" / "manifest.json").read_text())
    # max_models = 1 point, samples = 2 architectures of it, each trained, tested, exported and timed
    assert len(manifest["models"]) == 2 and not manifest["failed"] and len(manifest["points"]) == 1
    point = manifest["points"][0]
    assert point["samples"] == 2 and sorted(point["files"]) == sorted(m["file"] for m in manifest["models"])
    accs = [m["metrics"]["test_accuracy"] for m in manifest["models"]]
    assert point["test_accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert point["test_accuracy"]["std"] == pytest.approx(np.std(accs, ddof=1))
    assert sorted(p.name for p in (out / "models").glob("*.onnx")) == sorted(point["files"])
    entry = manifest["models"][0]
    assert {m["sample"] for m in manifest["models"]} == {0, 1} and len({m["seed"] for m in manifest["models"]}) == 2
    model_path = out / "models" / entry["file"]
    onnx.checker.check_model(str(model_path), full_check=True)
    meta = {p.key: p.value for p in onnx.load(str(model_path)).metadata_props}
    assert meta["nago.trial"] == str(entry["trial"]) and "nago.spec_hash" in meta
    assert json.loads(meta["nago.input_range"]) == [0, 255] and json.loads(meta["nago.input_shape"]) == [1, 8, 8]
    assert json.loads(meta["nago.generator_params"]) == entry["generator_params"]
    assert entry["parity_max_abs_diff"] < 1e-4
    for b in ("batch_1", "batch_32"):
        assert entry["latency_ms"][b]["onnxruntime"] > 0 and entry["latency_ms"][b]["torch"] > 0
    md = (out / "report.md").read_text()
    assert "## Final evaluation" in md and "## Exported models" in md and "torch/ort b32" in md
    # dynamic batch: 1 and 5 images
    sess = onnx_session(model_path)
    for n in (1, 5):
        assert sess.run(None, {"image": np.zeros((n, 1, 8, 8), np.float32)})[0].shape == (n, 10)
    assert "Pareto front" in (out / "report.md").read_text()


def test_recorded_objectives_are_stored_but_never_searched(tmp_path):
    """[search].record = ["test_error"]: every trial stores its test error (trials.csv too), while the
    strategy sees only the declared objectives, so the run is the same run without it."""
    from conftest import TINY_SPEC

    def go(name, text):
        spec = tmp_path / f"{name}.toml"
        spec.write_text(text)
        out = tmp_path / name
        run(spec, RunOptions(out=out, mode="quiet"))
        return out

    search_only = TINY_SPEC.replace("[export]\n", "[export]\nonnx = false\n")  # the export is not the point here
    plain = go("plain", search_only)
    text = search_only.replace("[search]\n", '[search]\nrecord = ["test_error", "flops"]\n')
    recorded = go("recorded", text)
    a, b = _values(plain), _values(recorded)
    assert [p for p, _, _ in a.values()] == [p for p, _, _ in b.values()]
    for (_, va, _), (_, vb, _) in zip(a.values(), b.values()):
        assert {k: vb[k] for k in va} == va and 0 <= vb["test_error"] <= 1 and vb["flops"] > 0
    rows = list(csv.DictReader((recorded / "trials.csv").open()))
    assert {"test_error", "flops"} <= set(rows[0]) and all(float(r["test_error"]) >= 0 for r in rows)
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_SPEC.replace("[search]\n", '[search]\nrecord = ["error"]\n'))
    assert main(["check", str(bad)]) == 2


def test_full_data_final_training_uses_the_whole_training_split(tmp_path):
    """[data].limit subsamples the search; [export].full_data = true trains the final models on all of it."""
    from conftest import TINY_SPEC

    text = TINY_SPEC.replace("val_fraction = 0.2\n", "val_fraction = 0.2\nlimit = 300\n").replace(
        "[export]\n", "[export]\nfull_data = true\nlatency = false\n").replace("samples = 2", "samples = 1").replace(
        "final_epochs = 1", "final_epochs = 4")  # one epoch leaves this network at chance, and a model fails there
    spec = tmp_path / "s.toml"
    spec.write_text(text)
    out = run(spec, RunOptions(out=tmp_path / "run", mode="quiet", budget=2))
    with Store(out / "study.db") as s:
        searched = {smp["train"]["images"] for t in s.trials() for smp in t.samples}
    manifest = json.loads((out / "models" / "manifest.json").read_text())
    assert searched == {240} and manifest["final"]["full_data"] is True
    # digits: 1797 images, 20 % set aside as test, 20 % of the rest as validation
    assert [m["metrics"]["train_images"] for m in manifest["models"]] == [1151]
    assert "on the whole training split" in (out / "report.md").read_text()


def test_a_searched_param_budget_spans_network_sizes(tmp_path):
    from conftest import TINY_SPEC

    from nago_spec.pipeline import DataShape, build_space, sample_architecture
    from nago_spec.spec import load_spec

    path = tmp_path / "s.toml"
    path.write_text(TINY_SPEC.replace("param_budget = 3000", "param_budget = { low = 1000, high = 30000, log = true }"))
    spec = load_spec(path)
    space = build_space(spec)
    assert "param_budget" in space.names
    point = space.from_unit(np.full(space.dim, 0.5))
    sizes = [sample_architecture(spec, {**point, "param_budget": b}, 0, DataShape(1, (8, 8), 10)).param_count()
             for b in (1000, 30000)]
    assert sizes[1] > 3 * sizes[0]


def test_resume_extends_without_rerunning(tiny_spec, tmp_path):
    out = tmp_path / "run"
    run(tiny_spec, RunOptions(out=out, budget=2, mode="quiet"))
    first = _values(out)
    assert len(first) == 2
    run(tiny_spec, RunOptions(out=out, budget=4, mode="quiet"))
    second = _values(out)
    assert len(second) == 4 and all(second[i] == first[i] for i in first)


def test_trial_left_running_by_a_killed_run_is_requeued(tiny_spec, tmp_path):
    out = tmp_path / "run"
    run(tiny_spec, RunOptions(out=out, budget=2, mode="quiet"))
    with Store(out / "study.db") as s:  # what kill -9 during trial 1 leaves behind
        s._conn.execute("UPDATE trials SET state = 'RUNNING', \"values\" = NULL WHERE id = 1")
    run(tiny_spec, RunOptions(out=out, budget=2, mode="quiet"))
    trials = _values(out)
    assert len(trials) == 2 and all(state is TrialState.COMPLETE for _, _, state in trials.values())


def test_same_seed_same_run(tiny_search, tmp_path):
    a = run(tiny_search, RunOptions(out=tmp_path / "a", budget=3, mode="quiet"))
    b = run(tiny_search, RunOptions(out=tmp_path / "b", budget=3, mode="quiet"))
    assert _values(a) == _values(b)


def test_changed_search_is_refused_then_force_new(tiny_search, tmp_path):
    out = tmp_path / "run"
    run(tiny_search, RunOptions(out=out, budget=2, mode="quiet"))
    changed = tiny_search.with_name("changed.toml")
    changed.write_text(tiny_search.read_text().replace("epochs = 1", "epochs = 2"))
    with pytest.raises(StoreError, match=r"train\.epochs"):
        run(changed, RunOptions(out=out, budget=2, mode="quiet"))
    run(changed, RunOptions(out=out, budget=1, force_new=True, mode="quiet"))
    assert len(_values(out)) == 1


def test_failing_objective_is_recorded_and_the_run_goes_on(tmp_path):
    (tmp_path / "flaky.py").write_text(textwrap.dedent("""
        def f(params):
            if params["x"] > 0.5:
                raise ValueError("x too large")
            return {"a": params["x"], "b": 1.0 - params["x"] ** 0.5}
    """))
    spec = tmp_path / "flaky.toml"
    spec.write_text(textwrap.dedent("""
        version = 1
        name = "flaky"
        [space]
        kind = "params"
        [space.params]
        x = { type = "float", low = 0.0, high = 1.0 }
        [[objectives]]
        name = "a"
        callable = "flaky.py:f"
        [[objectives]]
        name = "b"
        callable = "flaky.py:f"
        [search]
        strategy = "random"
        budget = 12
        [run]
        backend = "local"
    """))
    out = tmp_path / "run"
    run(spec, RunOptions(out=out, mode="quiet"))
    with Store(out / "study.db") as s:
        trials = s.trials()
    failed = [t for t in trials if t.state is TrialState.FAILED]
    assert len(trials) == 12 and failed and len(failed) < 12
    assert all("objective 'a'" in t.error and "x too large" in t.error for t in failed)
    assert "Failed trials" in (out / "report.md").read_text()


def test_process_backend_runs_the_params_spec(tmp_path):
    from pathlib import Path

    spec = Path(__file__).resolve().parents[1] / "specs" / "01_params_zdt1.toml"
    out = tmp_path / "run"
    run(spec, RunOptions(out=out, budget=10, backend="process", workers=2, mode="quiet"))
    with Store(out / "study.db") as s:
        trials = s.trials()
    assert len(trials) == 10 and all(t.state is TrialState.COMPLETE for t in trials)
    assert all(t.host for t in trials)


def test_status_report_and_export_commands(tiny_spec, tmp_path, capsys):
    out = tmp_path / "run"
    run(tiny_spec, RunOptions(out=out, budget=3, mode="quiet"))
    (out / "report.md").unlink()
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert "3/3 evaluations (3 complete" in status and "Pareto front" in status
    assert f"ran on: {socket.gethostname()} cpu (3 trials)" in status  # the worker's host and device
    manifest = json.loads((out / "models" / "manifest.json").read_text())
    assert {m["trained_on"]["device"] for m in manifest["models"]} == {"cpu"}
    assert main(["report", str(out)]) == 0 and (out / "report.md").exists()
    (out / "models" / "manifest.json").unlink()
    assert main(["export", str(out)]) == 0
    assert json.loads((out / "models" / "manifest.json").read_text())["models"]
    assert main(["status", str(tmp_path / "nowhere")]) == 1
    assert "not a run directory" in capsys.readouterr().err


def test_rerunning_a_finished_run_keeps_its_models(tiny_spec, tmp_path):
    out = tmp_path / "run"
    run(tiny_spec, RunOptions(out=out, budget=2, mode="quiet"))
    model = next((out / "models").glob("*.onnx"))
    stamp = model.stat().st_mtime_ns
    run(tiny_spec, RunOptions(out=out, budget=2, mode="quiet"))
    assert model.stat().st_mtime_ns == stamp and len(_values(out)) == 2
    # --force-new discards the run, not its models: they move to models/superseded/ with their entries
    old = json.loads((out / "models" / "manifest.json").read_text())
    changed = tiny_spec.with_name("changed.toml")
    changed.write_text(tiny_spec.read_text().replace("seed = 0", "seed = 1"))
    run(changed, RunOptions(out=out, budget=1, force_new=True, mode="quiet"))
    aside = out / "models" / "superseded"
    assert (aside / model.name).stat().st_mtime_ns == stamp
    index = json.loads((aside / "manifest.json").read_text())
    assert sorted(e["file"] for e in index["models"]) == sorted(e["file"] for e in old["models"])
    assert len(_values(out)) == 1


def test_a_rewritten_spec_is_not_served_from_a_stale_cache(tiny_search, tmp_path):
    out = tmp_path / "run"
    run(tiny_search, RunOptions(out=out, budget=1, mode="quiet"))
    changed = tiny_search.with_name("changed.toml")
    changed.write_text(tiny_search.read_text().replace("epochs = 1", "epochs = 0.5"))
    run(changed, RunOptions(out=out, budget=1, force_new=True, mode="quiet"))
    with Store(out / "study.db") as s:
        assert s.trials()[0].samples[0]["train"]["epochs"] < 0.6  # 9 of 17 steps, not the stale 1 epoch
