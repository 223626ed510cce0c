"""Tests of the Hyperband planner: bracket shapes, promotion order, and whole simulated runs against the plan."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from nago_spec.fidelity import (
    Fidelity,
    Job,
    Row,
    next_jobs,
    promotion_order,
    stopped_at,
)

BOHB = Fidelity(30, 120, 2)  # the BOHB paper's 30 / 60 / 120 epochs


def _done(i: int, f: tuple[float, ...], *, feasible: bool = True, config: int | None = None,
          bracket: int = 0, rung: int = 0, budget: float = 30.0) -> Row:
    return Row(i, i if config is None else config, bracket, rung, budget, "COMPLETE", f, feasible)


def _evaluate(config: int, budget: float) -> tuple[float, float]:
    """A deterministic two-objective result: a per-config quality, sharpened as the budget grows."""
    base = np.random.default_rng([config, 7]).random(2)
    noise = np.random.default_rng([config, int(budget)]).normal(size=2) * 10.0 / budget
    return float(base[0] + noise[0]), float(1.0 - base[0] + base[1] + noise[1])


def _simulate(fid: Fidelity, budget: float, workers: int, seed: int, fails=lambda config, budget: False) -> list[Row]:
    """Run the planner to the end with ``workers`` parallel workers, finishing one random running row at a
    time; checks at every step the budget and that rows given in any order, or jobs asked one at a time,
    give the same plan."""
    rng = np.random.default_rng(seed)
    rows: dict[int, Row] = {}
    while True:
        spent = sum(fid.cost(r.budget) for r in rows.values())
        busy = [r for r in rows.values() if r.state in ("PENDING", "RUNNING")]
        now = list(rows.values())
        jobs = next_jobs(fid, now, workers - len(busy), budget - spent)
        shuffled = [now[i] for i in rng.permutation(len(now))]
        assert next_jobs(fid, shuffled, workers - len(busy), budget - spent) == jobs
        one_by_one, extra = [], []
        for _ in jobs:  # resume after each single job: the same sequence
            (job,) = next_jobs(fid, now + extra, 1, budget - spent - sum(fid.cost(j.budget) for j in one_by_one))
            i = -1 - len(extra)
            extra.append(Row(i, i if job.config is None else job.config, job.bracket, job.rung, job.budget, "PENDING"))
            one_by_one.append(job)
        assert one_by_one == jobs
        for job in jobs:
            i = len(rows)
            assert job.config is None or job.rung > 0
            rows[i] = Row(i, i if job.config is None else job.config, job.bracket, job.rung, job.budget, "RUNNING")
        assert sum(fid.cost(r.budget) for r in rows.values()) <= budget + 1e-9
        busy = [r for r in rows.values() if r.state in ("PENDING", "RUNNING")]
        if not busy:
            return list(rows.values())
        row = busy[rng.integers(len(busy))]
        if fails(row.config, row.budget):
            rows[row.id] = replace(row, state="FAILED")
        else:
            f = _evaluate(row.config, row.budget)
            rows[row.id] = replace(row, state="COMPLETE", f=f, feasible=row.config % 5 != 0)


def _rungs(fid: Fidelity, rows: list[Row]) -> dict[int, list[list[Row]]]:
    out: dict[int, list[list[Row]]] = {}
    for r in sorted(rows, key=lambda r: r.id):
        out.setdefault(r.bracket, [[] for _ in fid.bracket(r.bracket)])[r.rung].append(r)
    return out


def _check_promotions(fid: Fidelity, rows: list[Row]) -> None:
    """Each rung above 0 holds exactly the best configs of the rung below, as many as the plan allows."""
    for index, rungs in _rungs(fid, rows).items():
        plan = fid.bracket(index)
        assert len(rungs[0]) <= plan[0][0]
        for k in range(1, len(plan)):
            order = [r.config for r in promotion_order(rungs[k - 1])]
            promoted = [r.config for r in rungs[k]]
            assert len(promoted) <= min(plan[k][0], len(order))
            assert set(promoted) == set(order[:len(promoted)])


@pytest.mark.parametrize("fid, shapes", [
    (BOHB, [((4, 30.0), (2, 60.0), (1, 120.0)), ((3, 60.0), (1, 120.0)), ((3, 120.0),),
            ((4, 30.0), (2, 60.0), (1, 120.0))]),
    (Fidelity(1, 27, 3), [((27, 1.0), (9, 3.0), (3, 9.0), (1, 27.0)), ((12, 3.0), (4, 9.0), (1, 27.0)),
                          ((6, 9.0), (2, 27.0)), ((4, 27.0),), ((27, 1.0), (9, 3.0), (3, 9.0), (1, 27.0))]),
    (Fidelity(5, 5), [((1, 5.0),), ((1, 5.0),)]),
])
def test_bracket_shapes(fid, shapes):
    assert [fid.bracket(i) for i in range(len(shapes))] == shapes
    assert fid.budgets() == tuple(sorted({r for shape in shapes for _, r in shape}))


def test_budgets_and_cost():
    assert BOHB.s_max == 2 and BOHB.budgets() == (30.0, 60.0, 120.0)
    assert Fidelity(1, 27, 3).s_max == 3  # log_3(27) is 2.9999999999999996 in floats
    uneven = Fidelity(10, 100, 3)  # 100 / 10 is not a power of 3: the smallest rung sits above min
    assert uneven.s_max == 2 and uneven.budgets() == pytest.approx((100 / 9, 100 / 3, 100.0))
    assert uneven.budgets()[0] >= uneven.min
    assert BOHB.cost(30) == 0.25 and BOHB.cost(120) == 1.0


@pytest.mark.parametrize("kwargs, words", [
    ({"min": 0, "max": 10}, "`min > 0`"),
    ({"min": 10, "max": 5}, "`min <= max`"),
    ({"min": 1, "max": float("inf")}, "`max`"),
    ({"min": 1, "max": 10, "eta": 1}, "`eta`"),
    ({"min": 1, "max": 10, "eta": 2.5}, "`eta`"),
    ({"min": 1, "max": 10, "eta": True}, "`eta`"),
])
def test_fidelity_validation(kwargs, words):
    with pytest.raises(ValueError, match=words):
        Fidelity(**kwargs)


def test_fidelity_validation_reports_every_problem():
    with pytest.raises(ValueError) as err:
        Fidelity(-1, 10, 1)
    assert "`min > 0`" in str(err.value) and "`eta`" in str(err.value)
    with pytest.raises(ValueError, match="bracket index"):
        BOHB.bracket(-1)


def test_promotion_order_feasible_rank_crowding_id():
    front = [_done(1, (1, 9)), _done(2, (5, 5)), _done(3, (0, 10)), _done(4, (10, 0))]
    behind = [_done(5, (6, 6)), _done(6, (2, 10))]  # both dominated, second front
    infeasible = [_done(7, (-5, -5), feasible=False)]  # dominates everything but is infeasible
    unfinished = [Row(8, 8, 0, 0, 30.0, "FAILED"), Row(9, 9, 0, 0, 30.0, "RUNNING"), Row(10, 10, 0, 0, 30.0, "PENDING")]
    rows = unfinished + infeasible + behind + front
    # boundary points 3, 4 (infinite crowding, tie by id), then 2 (crowding 0.9) before 1 (0.5)
    assert [r.id for r in promotion_order(rows)] == [3, 4, 2, 1, 5, 6, 7]
    assert [r.id for r in promotion_order(rows[::-1])] == [3, 4, 2, 1, 5, 6, 7]


def test_promotion_order_ties_and_errors():
    assert [r.id for r in promotion_order([_done(i, (1.0, 1.0)) for i in (5, 2, 9)])] == [2, 5, 9]
    assert [r.id for r in promotion_order([_done(i, (float(-i),)) for i in (1, 2, 3)])] == [3, 2, 1]
    assert [r.id for r in promotion_order([_done(2, (1.0, 0.0), feasible=False), _done(1, (2.0, 0.0), feasible=False)])] == [2, 1]
    assert promotion_order([Row(1, 1, 0, 0, 30.0, "FAILED")]) == []
    with pytest.raises(ValueError, match="finite objective"):
        promotion_order([Row(1, 1, 0, 0, 30.0, "COMPLETE")])
    with pytest.raises(ValueError, match="finite objective"):
        promotion_order([_done(1, (float("nan"), 1.0))])


def test_first_call_fills_rung_zero_then_opens_brackets():
    assert next_jobs(BOHB, [], 0, 100.0) == []
    assert next_jobs(BOHB, [], 5, 100.0) == [Job(0, 0, 30.0, None)] * 4 + [Job(1, 0, 60.0, None)]
    with pytest.raises(ValueError, match="`n >= 0`"):
        next_jobs(BOHB, [], -1, 1.0)


def test_idle_workers_open_next_bracket_while_a_rung_waits():
    rows = [_done(i, (float(i), float(4 - i))) for i in range(3)] + [Row(3, 3, 0, 0, 30.0, "RUNNING")]
    assert next_jobs(BOHB, rows, 2, 100.0) == [Job(1, 0, 60.0, None)] * 2
    rows.append(Row(4, 4, 1, 0, 60.0, "RUNNING"))
    rows[3] = _done(3, (9.0, 9.0))  # dominated: promotion takes 0 and 1... by crowding, boundary points first
    order = [r.config for r in promotion_order(rows[:4])]
    # the waiting bracket 0 comes first again: its two promotions, then bracket 1's missing rung-0 jobs
    assert next_jobs(BOHB, rows, 4, 100.0) == [Job(0, 1, 60.0, order[0]), Job(0, 1, 60.0, order[1]),
                                             Job(1, 0, 60.0, None), Job(1, 0, 60.0, None)]


def test_failed_rows_are_never_promoted_and_an_all_failed_rung_ends_the_bracket():
    failed = [Row(i, i, 0, 0, 30.0, "FAILED") for i in range(4)]
    assert next_jobs(BOHB, failed, 1, 100.0) == [Job(1, 0, 60.0, None)]
    one_ok = failed[:3] + [_done(3, (1.0, 1.0))]
    assert next_jobs(BOHB, one_ok, 3, 100.0) == [Job(0, 1, 60.0, 3), Job(1, 0, 60.0, None), Job(1, 0, 60.0, None)]
    climbed = one_ok + [_done(4, (1.0, 1.0), config=3, rung=1, budget=60.0)]
    assert next_jobs(BOHB, climbed, 1, 100.0) == [Job(0, 2, 120.0, 3)]


@pytest.mark.parametrize("seed", range(4))
def test_simulated_run_follows_the_plan(seed):
    budget = 25.5  # three cycles of brackets 0, 1, 2 (3 + 2.5 + 3 full-budget equivalents each)
    rows = _simulate(BOHB, budget, workers=3, seed=seed)
    assert sum(BOHB.cost(r.budget) for r in rows) <= budget + 1e-9
    rungs = _rungs(BOHB, rows)
    for index in range(3):  # the early brackets ran in full
        assert [len(rung) for rung in rungs[index]] == [n for n, _ in BOHB.bracket(index)]
        for rung, (_, r) in zip(rungs[index], BOHB.bracket(index)):
            assert all(row.budget == r for row in rung)
    assert sorted(rungs) == list(range(len(rungs))) and len(rungs) >= 7
    _check_promotions(BOHB, rows)
    # idle workers opened bracket 1 before bracket 0 was done
    assert min(r.id for r in rows if r.bracket == 1) < max(r.id for r in rows if r.bracket == 0)
    assert stopped_at(BOHB, rows)[promotion_order(rungs[0][2])[0].config] == 120.0


@pytest.mark.parametrize("seed", range(3))
def test_simulated_run_with_failures(seed):
    fid = Fidelity(1, 27, 3)
    fails = lambda config, budget: (config * 7 + int(budget)) % 4 == 0
    rows = _simulate(fid, 20.0, workers=4, seed=seed, fails=fails)
    assert any(r.state == "FAILED" for r in rows)
    _check_promotions(fid, rows)
    failed = {(r.bracket, r.rung, r.config) for r in rows if r.state == "FAILED"}
    assert not any((r.bracket, r.rung - 1, r.config) in failed for r in rows if r.rung > 0)


def test_budget_truncation():
    assert next_jobs(BOHB, [], 10, 0.6) == [Job(0, 0, 30.0, None)] * 2
    assert next_jobs(BOHB, [], 10, 0.2) == []
    rows = _simulate(BOHB, 0.6, workers=8, seed=0)
    assert [(r.bracket, r.rung) for r in rows] == [(0, 0), (0, 0)]  # 0.1 left buys no promotion, no bracket 1
    rows = _simulate(BOHB, 4.2, workers=2, seed=1)
    assert sum(BOHB.cost(r.budget) for r in rows) <= 4.2 + 1e-9
    _check_promotions(BOHB, rows)
    # bracket 0 in full (3.0); the rest went to what still fitted, no job beyond the budget
    assert [len(rung) for rung in _rungs(BOHB, rows)[0]] == [4, 2, 1]


@pytest.mark.parametrize("seed", range(3))
def test_exact_budget_runs_every_bracket_of_a_cycle_in_full(seed):
    rows = _simulate(BOHB, 8.5, workers=5, seed=seed)  # 3 + 2.5 + 3: brackets 0, 1, 2 exactly
    assert {index: [len(rung) for rung in rungs] for index, rungs in _rungs(BOHB, rows).items()} == {
        0: [4, 2, 1], 1: [3, 1], 2: [3]}


def test_earlier_brackets_keep_their_reserve_until_failures_free_it():
    running = [Row(i, i, 0, 0, 30.0, "RUNNING") for i in range(4)]
    # bracket 0 still needs 2 x 0.5 + 1 x 1.0: of 2.5 only 0.5 is free, one 60-epoch job of bracket 1
    assert next_jobs(BOHB, running, 5, 2.5) == [Job(1, 0, 60.0, None)]
    rows = [replace(r, state="FAILED") for r in running[:3]] + [_done(3, (1.0, 1.0)), _done(4, (2.0, 2.0), bracket=1, budget=60.0)]
    # three failures leave bracket 0 one promotion per rung (0.5 + 1.0), so 0.5 of 2.0 goes to bracket 1
    assert next_jobs(BOHB, rows, 5, 2.0) == [Job(0, 1, 60.0, 3), Job(1, 0, 60.0, None)]
    # bracket 0 ends (its promoted config failed): its reserve is free, and bracket 1's rung 0, cut short
    # at 2 of 3 rows, is filled before anything is promoted from it
    rows += [Row(5, 3, 0, 1, 60.0, "FAILED"), _done(6, (0.5, 3.0), bracket=1, budget=60.0)]
    assert next_jobs(BOHB, rows, 5, 1.0) == [Job(1, 0, 60.0, None)]
    rows += [_done(7, (3.0, 0.5), bracket=1, budget=60.0)]
    assert next_jobs(BOHB, rows, 5, 0.5) == []  # the promotion (1.0) does not fit, nor bracket 2 (1.0)
    best = promotion_order([r for r in rows if r.bracket == 1])[0].config
    assert best == 6 and next_jobs(BOHB, rows, 1, 1.0) == [Job(1, 1, 120.0, 6)]  # a boundary point, lower id


def test_rows_are_checked_and_stopped_at():
    rows = [_done(0, (1.0,)), _done(1, (2.0,)), _done(2, (1.0,), config=0, rung=1, budget=60.0),
            Row(3, 0, 0, 2, 120.0, "FAILED"), Row(4, 4, 0, 0, 30.0, "RUNNING")]
    assert stopped_at(BOHB, rows) == {0: 60.0, 1: 30.0}
    with pytest.raises(ValueError, match="rung"):
        next_jobs(BOHB, [Row(0, 0, 2, 1, 120.0, "PENDING")], 1, 1.0)
    with pytest.raises(ValueError, match="state"):
        next_jobs(BOHB, [Row(0, 0, 0, 0, 30.0, "DONE")], 1, 1.0)
    with pytest.raises(ValueError, match="unique"):
        next_jobs(BOHB, [Row(0, 0, 0, 0, 30.0, "PENDING")] * 2, 1, 1.0)


def test_planned_trials_counts_the_rows_of_a_run_without_failures():
    from nago_spec.fidelity import planned_trials

    f = Fidelity(min=0.25, max=1.0, eta=2)
    assert planned_trials(f, 6) == 11  # bracket 0 (4 + 2 + 1, cost 3) and bracket 1 (3 + 1, cost 2.5)
    assert planned_trials(f, 8.5) == 14  # and bracket 2: 3 at the full budget
    assert planned_trials(Fidelity(min=1.0, max=1.0), 5) == 5
    assert planned_trials(f, 0.2) == 0
