"""benchmarks/retrain_trial.py: one trial of a run trained again as its search trained it, its loss by tenths."""

from __future__ import annotations

import re

from conftest import load_benchmark

from nago_spec.runners.cli import main as nago
from nago_spec.store import Store


def test_a_trial_trained_again_as_the_search_did_gives_the_searchs_accuracy(tiny_search, tmp_path, capsys):
    out = tmp_path / "run"
    assert nago(["run", str(tiny_search), "--out", str(out), "--budget", "2", "--progress", "quiet"]) == 0
    trial = Store(out / "study.db", readonly=True).trials()[1]
    retrain = load_benchmark("retrain_trial")
    capsys.readouterr()
    assert retrain.main([str(out), str(trial.id), "--no-restart"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(rf"trial {trial.id}: [\d,]+ params, stage channels \(.*\); 1 epochs at lr 0.1, warm-up 0 "
                        r"epochs, no restart", lines[0])
    assert len(lines) >= 1 + 10 + 1 and all(re.fullmatch(r"  step \d+: mean loss of the last \d+ steps \d\.\d{4}", x)
                                            for x in lines[1:-1])
    val = float(re.match(r"val accuracy (\d\.\d{4})", lines[-1]).group(1))
    assert val == round(trial.samples[0]["train"]["val_accuracy"], 4)  # the search's training, step for step
    assert retrain.main([str(out), "99"]) == 2
