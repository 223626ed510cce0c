"""benchmarks/final_front.py: the bar and the hand-designed networks it sets a run's models against."""

from __future__ import annotations

from conftest import load_benchmark


def _row(trial: int, params: int, acc: float) -> dict:
    return {"trial": trial, "params": params, "test_accuracy": acc}


def test_each_hand_designed_network_gets_our_smallest_model_at_least_as_accurate():
    m = load_benchmark("final_front")
    table = [_row(0, 63_000, 0.9248), _row(5, 16_700, 0.9269), _row(14, 8_100, 0.9098), _row(9, 16_700, 0.9300)]
    got = {name: (None if r is None else r["trial"]) for (name, *_), r in m.against_hand(table)}
    # 92.5 %: trials 5 and 9 have the same size; the more accurate of the two is named
    assert got["2 Conv Layers net <100K parameters"] == 9
    assert got["2 Conv Layers 113K parameters"] == 9
    assert got["2 Conv Layers with 3 FC 1.8M parameters"] is None  # 93.2 %: none of ours reaches it
    assert got["DenseNet-BC 768K params"] is None


def test_the_bar_names_the_smallest_model_beating_it_and_the_most_accurate_within_the_size(capsys):
    m = load_benchmark("final_front")
    table = [_row(0, 163_000, 0.95), _row(5, 16_700, 0.9269), _row(14, 8_100, 0.9098), _row(2, 40_000, 0.9300)]
    m.print_bar(table, 0.925, 100_000)
    assert capsys.readouterr().out.splitlines() == [
        "2 model(s) with <= 100,000 params beat 92.50 % test accuracy; the smallest: trial 5, 16,700 params, 92.69 %",
        "the most accurate with <= 100,000 params: trial 2, 40,000 params, 93.00 %",
    ]
    m.print_bar(table, 0.96, None)
    assert capsys.readouterr().out.splitlines()[0] == "no model beats 96.00 % test accuracy"
