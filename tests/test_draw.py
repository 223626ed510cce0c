"""Drawings: the three levels of an architecture to PNG, from a spec or from a run's trial."""

from __future__ import annotations

from pathlib import Path

import pytest

from nago_spec.draw import draw_architecture
from nago_spec.generator import HnagConfig, LevelConfig, sample_architecture
from nago_spec.runners.cli import main
from nago_spec.runners.run import RunOptions, run

REPO = Path(__file__).resolve().parents[1]


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("mid_nodes", [1, 4])
def test_draw_shows_the_largest_cell_and_op_graph(tmp_path, mid_nodes):
    cfg = HnagConfig(LevelConfig("ws", {"nodes": 6, "k": 4, "p": 0.5}), LevelConfig("er", {"nodes": mid_nodes, "p": 0.7}),
                     LevelConfig("ba", {"nodes": 5, "m": 2}), param_budget=5000, head_width=0)
    arch = sample_architecture(cfg, 11, in_channels=3, image_size=(32, 32), num_classes=10)
    shown = draw_architecture(arch, tmp_path / "a.png")
    assert _is_png(tmp_path / "a.png")
    assert arch.cells[shown["cell"]].dag.n == max(c.dag.n for c in arch.cells)
    graphs = arch.cells[shown["cell"]].op_graphs
    assert graphs[shown["op_graph"]].dag.n == max(g.dag.n for g in graphs)


def test_draw_command_from_a_spec_and_from_a_run(tiny_spec, tmp_path, capsys):
    assert main(["draw", str(tiny_spec), "--out", str(tmp_path / "spec.png")]) == 0
    assert _is_png(tmp_path / "spec.png") and "centre of the space" in capsys.readouterr().out
    out = tmp_path / "run"
    run(tiny_spec, RunOptions(out=out, budget=2, mode="quiet"))
    assert main(["draw", str(out), "--trial", "1", "--out", str(tmp_path / "t1.png")]) == 0
    assert "trial 1 (complete)" in capsys.readouterr().out and _is_png(tmp_path / "t1.png")
    assert main(["draw", str(out), "--out", str(tmp_path / "best.png")]) == 0
    assert main(["draw", str(out), "--trial", "7", "--out", str(tmp_path / "x.png")]) == 1
    assert "no trial 7 (trials 0..1)" in capsys.readouterr().err


def test_a_params_spec_has_nothing_to_draw(tmp_path, capsys):
    assert main(["draw", str(REPO / "specs" / "01_params_zdt1.toml"), "--out", str(tmp_path / "x.png")]) == 1
    assert "no architecture to draw" in capsys.readouterr().err


def test_draw_rnag(tmp_path):
    from nago_spec.generator import RnagConfig

    cfg = RnagConfig(LevelConfig("ws", {"nodes": 10, "k": 4, "p": 0.75}), param_budget=5000, head_width=0)
    arch = sample_architecture(cfg, 3, in_channels=1, image_size=(8, 8), num_classes=10)
    shown = draw_architecture(arch, tmp_path / "r.png")
    assert _is_png(tmp_path / "r.png") and arch.cells[shown["cell"]].dag.n == 10


def test_draw_command_on_the_rnag_example(tmp_path, capsys):
    assert main(["draw", str(REPO / "specs" / "03_rnag_digits.toml"), "--out", str(tmp_path / "r.png")]) == 0
    assert _is_png(tmp_path / "r.png")
