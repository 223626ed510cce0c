"""benchmarks/retrain_export.py: an exported network final-trained again from its manifest."""

from __future__ import annotations

import json
import re

from conftest import load_benchmark

from nago_spec.runners.cli import main as nago


def test_an_export_trained_again_unchanged_repeats_its_final_training_and_a_larger_budget_widens_it(
        tiny_spec, tmp_path, capsys):
    out = tmp_path / "run"
    assert nago(["run", str(tiny_spec), "--out", str(out), "--progress", "quiet"]) == 0
    manifest = out / "models" / "manifest.json"
    entry = json.loads(manifest.read_text())["models"][0]
    retrain = load_benchmark("retrain_export")
    capsys.readouterr()
    assert retrain.main([str(manifest)]) == 0
    first, last = capsys.readouterr().out.splitlines()
    assert first.startswith(f"trial {entry['trial']} sample {entry['sample']}: {entry['params']:,} params")
    test = float(re.search(r"test accuracy (\d\.\d{4})", last).group(1))
    assert test == round(entry["metrics"]["test_accuracy"], 4)  # the export's final training, step for step
    wider = 2 * 3000  # tiny_spec's fixed param_budget
    assert retrain.main([str(manifest), "--param-budget", str(wider), "--epochs", "0.2", "--cutout", "2",
                         "--max-seconds", "60"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "capped at 60 s" in first
    assert int(re.search(r": ([\d,]+) params", first).group(1).replace(",", "")) > entry["params"]
    assert "0.2 epochs" in first and "cutout 2" in first
    assert retrain.main([str(manifest), "--model", "99"]) == 2
    other = tmp_path / "other.toml"
    other.write_text(tiny_spec.read_text().replace("head_width = 16", "head_width = 32"))
    assert retrain.main([str(manifest), "--spec", str(other)]) == 2
    assert "give the run's spec" in capsys.readouterr().err
    # the spec's [export].param_budget is the default width: a run exported with it repeats; this one was not
    widened = tmp_path / "widened.toml"
    widened.write_text(tiny_spec.read_text().replace("[export]\n", f"[export]\nparam_budget = {wider}\n"))
    assert retrain.main([str(manifest), "--spec", str(widened)]) == 2
    assert "give the run's spec" in capsys.readouterr().err
