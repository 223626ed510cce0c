"""benchmarks/bench_gpu.py's logic on the CPU: it skips with its reason without a GPU, and with
--allow-cpu its part 1 times ours against the hand-written module (the GPU numbers come from a GPU
machine; docs/RESULTS.md)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from conftest import load_benchmark


@pytest.fixture
def bench(monkeypatch):
    module = load_benchmark("bench_gpu")
    threads = torch.get_num_threads()
    yield lambda *argv: (monkeypatch.setattr(sys, "argv", ["bench_gpu.py", *argv]), module.main())[1]
    torch.set_num_threads(threads)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the benchmark runs instead of skipping")
def test_it_skips_with_its_reason_without_a_gpu(bench, capsys):
    assert bench() == 0
    assert capsys.readouterr().out.startswith("bench_gpu: skipped: torch ")


def test_part_1_times_ours_against_the_hand_written_module(bench, tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert bench("--allow-cpu", "--steps", "2", "--batch", "16", "--cases", "small", "--no-compile", "--no-search",
                 "--json", str(out)) == 0
    rows = json.loads(out.read_text())["networks"]
    assert {(r["precision"], r["format"]) for r in rows} == {("fp32", "nchw"), ("fp32", "nhwc"), ("bf16", "nchw"),
                                                            ("bf16", "nhwc")}
    assert all(r["ours_img_s"] > 0 and r["hand_img_s"] > 0 and r["ratio"] > 0 for r in rows)
    assert "worst ours/hand" in capsys.readouterr().out
