"""Final training and ONNX export (issue 7): round trips of sampled architectures from the smallest to
the largest the space allows, parity with torch on real test images, the manifest against the files,
and an export that resumes, retrains on demand and follows its settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from nago_spec.data import load_dataset
from nago_spec.errors import ExportError
from nago_spec.export import (
    PARITY_TOLERANCE,
    check_parity,
    export_onnx,
    latency_ms,
    onnx_session,
)
from nago_spec.network import Normalize, build_network
from nago_spec.pipeline import DataShape, build_space, sample_architecture
from nago_spec.spec import load_spec
from nago_spec.store import Store
from nago_spec.train import train
from nago_spec.runners.cli import main
from nago_spec.runners.run import RunOptions, export_run, run

REPO = Path(__file__).resolve().parents[1]
FASHION = REPO.parent / "shared" / "data" / "fashion-mnist"


def _model(spec_path: Path, data, unit: float, seed: int = 0) -> tuple[nn.Module, dict]:
    """The architecture at ``unit`` (0 = every searched parameter at its low end, 1 = its high end:
    the most cells, nodes and operations the space allows), and its summary."""
    spec = load_spec(spec_path)
    space = build_space(spec)
    arch = sample_architecture(spec, space.from_unit(np.full(space.dim, unit)), seed, DataShape.of(data))
    return nn.Sequential(Normalize(data.mean, data.std), build_network(arch, seed)), arch.summary()


def _calibrate(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Real BatchNorm statistics without training: cumulative averages over ``x`` in train mode."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 250):
            model(x[i : i + 250].float())
    return model.eval()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("unit", [0.0, 0.5, 1.0])
def test_round_trip_from_the_smallest_to_the_largest_architecture(digits, unit, tmp_path):
    model, summary = _model(REPO / "specs" / "quickstart.toml", digits, unit)
    train(model, digits, epochs=1, batch_size=64, lr=0.05, seed=0)
    params = summary["params"]
    path = tmp_path / "m.onnx"
    export_onnx(model, path, input_shape=(1, 8, 8), opset=20, metadata={"nago.params": str(params)})
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == 20
    assert {p.key: p.value for p in proto.metadata_props}["nago.params"] == str(params)
    assert check_parity(path, model, digits.x_test)["max_abs_diff"] <= PARITY_TOLERANCE  # all 360 test digits
    session = onnx_session(path)
    for n in (1, 33):
        assert session.run(None, {"image": digits.x_test[:n].float().numpy()})[0].shape == (n, 10)


def test_the_largest_architecture_has_the_most_operations(digits):
    """(Not the most parameters: the width follows param_budget, so more operations are narrower.)"""
    ops = [_model(REPO / "specs" / "quickstart.toml", digits, u)[1]["op_nodes"] for u in (0.0, 0.5, 1.0)]
    assert ops[0] < ops[1] < ops[2]


@pytest.mark.slow  # 28 s; the default run exports the largest digits architecture (test_round_trip_from_...[1.0])
@pytest.mark.skipif(not FASHION.is_dir(), reason=f"no Fashion-MNIST at {FASHION} (a clone without ../shared)")
def test_round_trip_of_the_largest_fashion_mnist_architecture(tmp_path):
    data = load_dataset("idx", FASHION, limit=1000)
    model, _ = _model(REPO / "specs" / "02_fashion_mnist.toml", data, 1.0)
    _calibrate(model, data.x_train)
    path = tmp_path / "big.onnx"
    export_onnx(model, path, input_shape=(1, 28, 28))
    onnx.checker.check_model(str(path), full_check=True)
    # 192 operations, untrained: float32 rounding grows beyond 1e-4 in torch itself, and
    # onnxruntime must then be as close to torch in float64 as torch in float32 is
    agreement = check_parity(path, model, data.x_test[:256])
    if agreement["max_abs_diff"] > PARITY_TOLERANCE:
        assert agreement["float64_onnxruntime"] <= 2 * agreement["float64_torch"]


def test_parity_check_refuses_a_wrong_export(digits, tmp_path):
    model, _ = _model(REPO / "specs" / "quickstart.toml", digits, 0.5)
    _calibrate(model, digits.x_train)
    path = tmp_path / "m.onnx"
    export_onnx(model, path, input_shape=(1, 8, 8))
    assert check_parity(path, model, digits.x_test)["float64_torch"] is None  # within 1e-4: no float64 run
    with torch.no_grad():
        next(p for p in model.parameters() if p.ndim == 4).mul_(1.01)  # torch's model moves on, the file not
    with pytest.raises(ExportError, match="onnxruntime differs from torch"):
        check_parity(path, model, digits.x_test)


def test_latency_is_measured_for_both_runtimes(digits, tmp_path):
    model, _ = _model(REPO / "specs" / "quickstart.toml", digits, 0.5)
    path = tmp_path / "m.onnx"
    export_onnx(model, path, input_shape=(1, 8, 8))
    lat = latency_ms(path, model, (1, 8, 8), 32, min_runs=3, min_seconds=0.0)
    assert set(lat) == {"onnxruntime", "torch"} and all(v > 0 for v in lat.values())


# -- the export step of a run ---------------------------------------------------------------------


def _manifest(out: Path) -> dict:
    return json.loads((out / "models" / "manifest.json").read_text())


def _stamps(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "models").glob("*.onnx")}


def test_manifest_matches_the_files_and_their_metadata(tiny_spec, tmp_path, digits):
    out = tmp_path / "run"
    run(tiny_spec, RunOptions(out=out, budget=3, mode="quiet"))
    m = _manifest(out)
    assert sorted(_stamps(out)) == sorted(e["file"] for e in m["models"])
    for e in m["models"]:
        path = out / "models" / e["file"]
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert (meta["nago.trial"], meta["nago.sample"], meta["nago.seed"]) == (
            str(e["trial"]), str(e["sample"]), str(e["seed"]))
        assert json.loads(meta["nago.metrics"]) == e["metrics"] and meta["nago.params"] == str(e["params"])
        assert json.loads(meta["nago.classes"]) == e["classes"] == list(digits.classes)
        assert e["input"]["shape"] == ["batch", 1, 8, 8] and e["input"]["range"] == [0, 255]
        logits = onnx_session(path).run(None, {"image": digits.x_test.float().numpy()})[0]
        acc = float((logits.argmax(1) == digits.y_test.numpy()).mean())
        assert acc == pytest.approx(e["metrics"]["test_accuracy"], abs=1e-9)  # the file is the model tested
    assert m["final"]["samples"] == 2 and m["spec_hash"]


def test_export_resumes_retrains_on_force_and_follows_its_settings(tiny_spec, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run(tiny_spec, RunOptions(out=out, budget=3, mode="quiet"))
    first = _stamps(out)
    assert len(first) == 2 and _manifest(out)["missing"] == []
    # Ctrl-C (or SIGTERM) in a forced re-export as its first model is recorded: that model is deployable
    # at once, manifest.json lists it and names the missing one, and `nago export` trains only that one
    save_final = Store.save_final

    def interrupted(self, *args, **kwargs):
        save_final(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Store, "save_final", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_run(out, "quiet", force=True)
    monkeypatch.undo()
    m = _manifest(out)
    assert len(m["models"]) == 1 and len(m["missing"]) == 1
    done, lost = m["models"][0]["file"], "trial_{trial}_s{sample}.onnx".format(**m["missing"][0])
    assert {done, lost} == set(first) and _stamps(out)[done] != first[done]
    stamp = _stamps(out)[done]
    export_run(out, "quiet")
    resumed = _stamps(out)
    assert resumed[done] == stamp and resumed[lost] != first[lost] and _manifest(out)["missing"] == []
    export_run(out, "quiet", force=True)
    assert all(t != resumed[f] for f, t in _stamps(out).items())
    # other settings of [export]: the new selection is trained; a model it does not replace is not
    # deleted but set aside in models/superseded/, with its manifest entry and the settings it had
    before = _manifest(out)
    forced = _stamps(out)
    top = tmp_path / "top.toml"
    top.write_text(tiny_spec.read_text().replace("max_models = 1\nsamples = 2",
                                                 'max_models = 2\nsamples = 1\nselect = "top"\norder_by = "params"')
                   .replace("final_epochs = 1", "final_epochs = 4"))  # 1 epoch leaves them at chance
    run(top, RunOptions(out=out, budget=3, mode="quiet"))
    m = _manifest(out)
    with Store(out / "study.db") as s:
        smallest = sorted((t.values["params"], t.id) for t in s.trials())[:2]
    assert [p["trial"] for p in m["points"]] == [i for _, i in smallest]
    now = sorted(f"trial_{i}_s0.onnx" for _, i in smallest)
    assert sorted(_stamps(out)) == now
    assert m["selection"] == "top" and m["ordered_by"] == "params"
    aside = out / "models" / "superseded"
    gone = sorted(set(forced) - set(now))
    assert gone and sorted(p.name for p in aside.glob("*.onnx")) == gone
    assert all((aside / f).stat().st_mtime_ns == forced[f] for f in gone)  # moved, not retrained
    index = json.loads((aside / "manifest.json").read_text())
    assert sorted(e["file"] for e in index["models"]) == gone
    assert all(e["export_key"] == before["export_key"] and e["final"] == before["final"] for e in index["models"])
    by_file = {e["file"]: {k: v for k, v in e.items() if k in before["models"][0]} for e in index["models"]}
    assert {e["file"]: e for e in before["models"] if e["file"] in gone} == by_file


def test_export_trials_names_the_points_in_its_order(tiny_spec, tmp_path, capsys):
    # the search's front is not asked: [export].trials retrains the trials it names, as `nago export` does
    # after a run, e.g. two front networks for longer; a trial the run does not have is one line, exit 2
    out = tmp_path / "run"
    run(tiny_spec, RunOptions(out=out, budget=3, mode="quiet"))
    first = _stamps(out)
    spec = out / "spec.toml"
    text = spec.read_text()
    spec.write_text(text.replace("[export]\n", "[export]\ntrials = [7, 1, 2]\n"))
    assert main(["export", str(out), "--progress", "quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"{spec}: [export].trials = [7, 1, 2]: no complete trial 7 in this run (complete: 0-2)"
    assert _stamps(out) == first  # nothing trained, nothing deleted
    # all the named points, in the order given: [export].max_models = 1 caps the selection, not these
    # 4 epochs: at 2, trial 0's sample 1 learns on one processor (AMD EPYC) and stays at 13.6 % on another
    # (an Intel Xeon), where the check of a model that did not learn fails it
    spec.write_text(text.replace("[export]\n", "[export]\ntrials = [2, 0]\n")
                    .replace("final_epochs = 1.0", "final_epochs = 4"))
    export_run(out, "quiet")
    m = _manifest(out)
    assert [p["trial"] for p in m["points"]] == [2, 0]
    assert sorted(_stamps(out)) == ["trial_0_s0.onnx", "trial_0_s1.onnx", "trial_2_s0.onnx", "trial_2_s1.onnx"]
    assert {x["metrics"]["final_epochs"] for x in m["models"]} == {4.0}


def test_a_final_training_that_did_not_learn_fails_its_model_instead_of_exporting_it(tiny_spec, tmp_path):
    """A final training can diverge into a network that answers one class for every image (issue 23,
    Fashion-MNIST: 10.00 % test accuracy, loss ln 10). It was exported and listed as a deployable model,
    flagged only by below_search. At lr 2 both of the tiny spec's final trainings diverge."""
    spec = tmp_path / "diverges.toml"
    spec.write_text(tiny_spec.read_text().replace("samples = 2", "samples = 2\nlr = 2.0\nlatency = false"))
    out = tmp_path / "run"
    run(spec, RunOptions(out=out, budget=2, mode="quiet"))  # the run goes on and ends normally
    m = _manifest(out)
    assert m["models"] == [] and m["missing"] == []
    assert [(f["trial"], f["sample"]) for f in m["failed"]] == [(1, 0), (1, 1)]
    for f in m["failed"]:
        assert f["error"].startswith("the final training did not learn: "), f["error"]
        assert "the most frequent class (10.1% of 287 images" in f["error"]
    assert not list((out / "models").rglob("*.onnx"))
    assert "- trial 1 sample 1: the final training did not learn: " in (out / "report.md").read_text()


def test_augmented_final_training_is_recorded(tiny_spec, tmp_path):
    spec = tmp_path / "aug.toml"
    spec.write_text(tiny_spec.read_text().replace("samples = 2", "samples = 1\ncrop_padding = 1\ncutout = 3\nlatency = false"))
    out = tmp_path / "run"
    run(spec, RunOptions(out=out, budget=2, mode="quiet"))
    m = _manifest(out)
    assert m["final"]["augment"] == {"crop_padding": 1, "flip": False, "cutout": 3}
    assert m["models"][0]["latency_ms"] is None
    assert "augmentation: crop_padding 1, cutout 3" in (out / "report.md").read_text()


def test_export_param_budget_widens_the_searched_graphs(tiny_spec, tmp_path, digits):
    """[export].param_budget: each final model is its point's architecture, the same graphs from the same
    seed, at another budget's widths (search small networks, deploy wider ones); the manifest records
    the budget, and the search's accuracy, of the narrower network, is shown but not judged against."""
    spec = tmp_path / "wide.toml"
    spec.write_text(tiny_spec.read_text().replace("samples = 2", "samples = 2\nparam_budget = 12000\nlatency = false"))
    out = tmp_path / "run"
    run(spec, RunOptions(out=out, budget=2, mode="quiet"))
    m = _manifest(out)
    assert m["final"]["param_budget"] == 12000 and len(m["models"]) == 2 and m["failed"] == []
    resolved = load_spec(out / "spec.toml")
    with Store(out / "study.db") as s:
        searched = {t.id: t for t in s.trials()}
    for e in m["models"]:
        wide = sample_architecture(resolved, e["generator_params"], e["seed"], DataShape.of(digits), 12000)
        narrow = sample_architecture(resolved, e["generator_params"], e["seed"], DataShape.of(digits))
        assert wide.param_count() == e["params"] > 2 * narrow.param_count()
        assert wide.top == narrow.top and [(c.dag, c.op_graphs) for c in wide.cells] == [
            (c.dag, c.op_graphs) for c in narrow.cells]
        assert all(w > n for w, n in zip(wide.stage_channels, narrow.stage_channels))
        if e["sample"] == 0:  # the architecture the search trained, there at the point's budget
            assert narrow.param_count() == searched[e["trial"]].values["params"]
    (p,) = m["points"]
    assert p["search_val_accuracy"] is not None and p["below_search"] is None
    assert "widths scaled to param_budget 12,000" in (out / "report.md").read_text()
    # without it the same run exports the searched sizes; the widened models move aside, not deleted
    spec.write_text(spec.read_text().replace("param_budget = 12000\n", ""))
    run(spec, RunOptions(out=out, budget=2, mode="quiet"))
    m2 = _manifest(out)
    assert m2["final"]["param_budget"] is None
    assert [e["params"] for e in m2["models"]] == [
        searched[e["trial"]].values["params"] if e["sample"] == 0 else e["params"] for e in m2["models"]]
    wide = {(e["trial"], e["sample"]): e["params"] for e in m["models"]}
    assert all(e["params"] < wide[e["trial"], e["sample"]] for e in m2["models"])
    aside = json.loads((out / "models" / "superseded" / "manifest.json").read_text())
    assert sorted(e["file"] for e in aside["models"]) == sorted(e["file"] for e in m["models"])
