"""benchmarks/generator_variance.py: the intraclass correlation and the report on a real run's samples."""

from __future__ import annotations

import sys

import pytest
from conftest import load_benchmark

from nago_spec.runners.run import RunOptions, run


def test_icc1_is_one_without_spread_within_and_low_without_spread_between():
    icc1 = load_benchmark("generator_variance").icc1
    assert icc1([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [4.0, 4.0, 4.0]]) == pytest.approx(1.0)
    assert icc1([[1.0, 3.0], [3.0, 1.0], [1.0, 3.0], [3.0, 1.0]]) < 0  # the same mean everywhere
    groups = [[0.50, 0.52, 0.49], [0.30, 0.31, 0.29], [0.70, 0.69, 0.72]]
    assert 0.95 < icc1(groups) < 1.0


def test_the_report_reads_each_samples_values(tiny_spec, tmp_path, capsys, monkeypatch):
    text = tiny_spec.read_text().replace("lr = 0.1\n", "lr = 0.1\nsamples_per_point = 2\n", 1)
    text = text.replace("budget = 4", "budget = 3").replace("[export]\n", "[export]\nonnx = false\n")
    tiny_spec.write_text(text)
    out = run(tiny_spec, RunOptions(out=tmp_path / "run", mode="quiet"))
    monkeypatch.setattr(sys, "argv", ["generator_variance.py", str(out), "--png", str(tmp_path / "gv.png")])
    assert load_benchmark("generator_variance").main() == 0
    printed = capsys.readouterr().out
    assert "3 generator points x 2 architectures" in printed and "ICC(1)" in printed
    assert (tmp_path / "gv.png").stat().st_size > 0
