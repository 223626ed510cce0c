"""Hyperband / successive-halving plans for a multi-objective search, derived afresh from the stored trials."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

STATES = ("PENDING", "RUNNING", "COMPLETE", "FAILED")
FINISHED = ("COMPLETE", "FAILED")
#: What a budget measures: training epochs, or a fraction of the training split.
FIDELITY_ON = ("epochs", "data")
_TOL = 1e-9  # slack on budget comparisons, so that costs summing to the budget exactly fit


@dataclass(frozen=True)
class Fidelity:
    """The budget range of a multi-fidelity search (``[search.fidelity]``): rung budgets
    ``max * eta**-i`` no smaller than ``min``, in Hyperband brackets of successive halving.

    ``min > 0``, ``max >= min``, ``eta >= 2`` is the factor between rungs (a rung keeps ``1/eta`` of
    the one below). ``on = "epochs"``: a trial's budget replaces [train].epochs; ``on = "data"``:
    it is the fraction of the training split used (a seeded, stratified subset, nested across
    budgets) with [train].epochs unchanged.
    """

    min: float
    max: float
    eta: int = 2
    on: str = "epochs"

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.min, (int, float)) and not isinstance(self.min, bool) and math.isfinite(self.min) and self.min > 0):
            problems.append(f"`min > 0` must hold (finite number), but got min={self.min!r}")
        if not (isinstance(self.max, (int, float)) and not isinstance(self.max, bool) and math.isfinite(self.max)):
            problems.append(f"`max` must be a finite number, but got max={self.max!r}")
        elif not problems and self.max < self.min:
            problems.append(f"`min <= max` must hold, but got (min={self.min!r}, max={self.max!r})")
        if not (isinstance(self.eta, (int, np.integer)) and not isinstance(self.eta, bool) and self.eta >= 2):
            problems.append(f"`eta` must be an integer >= 2, but got eta={self.eta!r}")
        if self.on not in FIDELITY_ON:
            problems.append(f"`on` must be one of {', '.join(FIDELITY_ON)}, but got on={self.on!r}")
        if problems:
            raise ValueError("invalid Fidelity: " + "; ".join(problems))

    @property
    def s_max(self) -> int:
        """Index of the most aggressive bracket: ``floor(log_eta(max / min))`` (0 when ``min == max``)."""
        return math.floor(math.log(self.max / self.min) / math.log(self.eta) + _TOL)

    def budgets(self) -> tuple[float, ...]:
        """The ``s_max + 1`` rung budgets, smallest first: ``max / eta**(s_max - i)``; the smallest is ``>= min``."""
        return tuple(float(self.max) / self.eta ** (self.s_max - i) for i in range(self.s_max + 1))

    def bracket(self, index: int) -> tuple[tuple[int, float], ...]:
        """The rungs ``(n_k, r_k)``, k = 0..s, of the bracket opened ``index``-th (0-based; Li et al. 2018).

        ``s = s_max - index % (s_max + 1)``, ``n = ceil((s_max + 1) / (s + 1) * eta**s)``,
        ``n_k = floor(n / eta**k)`` configurations at budget ``r_k = max * eta**(k - s)``. Brackets cycle
        from the most aggressive (many configurations at the smallest budget) to plain evaluation at ``max``.
        """
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"a bracket index must be an integer >= 0, but got {index!r}")
        s = self.s_max - int(index) % (self.s_max + 1)
        n = -(-(self.s_max + 1) * self.eta**s // (s + 1))  # integer ceil: 4/3*9 must be 12, not 13
        return tuple((n // self.eta**k, float(self.max) / self.eta ** (s - k)) for k in range(s + 1))

    def cost(self, budget: float) -> float:
        """Search-budget cost of one evaluation at ``budget``, in full-budget equivalents: ``budget / max``."""
        return float(budget) / float(self.max)


@dataclass(frozen=True)
class Row:
    """One stored evaluation (trial) as the planner sees it.

    ``config`` is the id of the row that first proposed these parameters (``== id`` for a new one);
    ``bracket`` is 0-based in opening order, ``rung`` 0-based within it. ``f`` (m,) is the objective
    vector in minimisation form, set on COMPLETE rows only.
    """

    id: int
    config: int
    bracket: int
    rung: int
    budget: float
    state: str
    f: tuple[float, ...] | None = None
    feasible: bool = True


@dataclass(frozen=True)
class Job:
    """An evaluation to start: ``config`` None asks the strategy for a new configuration (rung 0 only);
    otherwise it is the config promoted from the rung below."""

    bracket: int
    rung: int
    budget: float
    config: int | None


def promotion_order(rows: Sequence[Row]) -> list[Row]:
    """The COMPLETE rows best first; PENDING, RUNNING and FAILED rows are left out.

    Feasible before infeasible; within each group by non-dominated rank (pymoo), then by larger
    crowding distance within the rank (infinite for the boundary points, and for every point of a
    front of one or two), then by smaller id.
    """
    done = sorted((r for r in rows if r.state == "COMPLETE"), key=lambda r: r.id)
    if not done:
        return []
    for r in done:
        if r.f is None or len(r.f) == 0 or not all(math.isfinite(float(v)) for v in r.f):
            raise ValueError(f"row {r.id}: a COMPLETE row needs a finite objective vector, but got f={r.f!r}")
    if len({len(r.f) for r in done}) > 1:
        raise ValueError(f"COMPLETE rows disagree on the number of objectives: {sorted({len(r.f) for r in done})}")
    # imported here: a spec names this module's Fidelity, and loading one must not pay for pymoo
    from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    key: dict[int, tuple[int, int, float]] = {}
    for group, members in ((0, [r for r in done if r.feasible]), (1, [r for r in done if not r.feasible])):
        if not members:
            continue
        F = np.array([r.f for r in members], dtype=float)
        for rank, front in enumerate(NonDominatedSorting().do(F)):
            front = np.asarray(front, dtype=int)
            crowd = np.full(len(front), np.inf) if len(front) <= 2 else calc_crowding_distance(F[front])
            for i, c in zip(front, crowd):
                key[members[i].id] = (group, rank, -float(c))
    return sorted(done, key=lambda r: (*key[r.id], r.id))


def _check(fidelity: Fidelity, rows: Sequence[Row]) -> list[Row]:
    """``rows`` sorted by id, after checking what the planner relies on (ValueError otherwise)."""
    out = sorted(rows, key=lambda r: r.id)
    for a, b in pairwise(out):
        if a.id == b.id:
            raise ValueError(f"row ids must be unique, but id {a.id} appears twice")
    for r in out:
        if r.state not in STATES:
            raise ValueError(f"row {r.id}: state must be one of {STATES}, but got {r.state!r}")
        if r.bracket < 0:
            raise ValueError(f"row {r.id}: `bracket >= 0` must hold, but got bracket={r.bracket}")
        size = len(fidelity.bracket(r.bracket))
        if not 0 <= r.rung < size:
            raise ValueError(f"row {r.id}: bracket {r.bracket} has rungs 0..{size - 1}, but got rung={r.rung}")
    return out


def _bracket_job(fidelity: Fidelity, index: int, rungs: list[list[Row]], left: float) -> Job | bool:
    """The next job of bracket ``index`` that fits in ``left``; else True when it waits on unfinished rows,
    False when it is finished. ``rungs[k]`` holds the rows of rung k.

    Rung 0 wants ``n_0`` rows, rung k+1 the best ``min(n_{k+1}, configs completed at rung k)`` of rung k.
    A rung whose missing job does not fit in ``left`` is cut short: it counts as full.
    """
    below: list[Row] = []
    for k, (n_k, r_k) in enumerate(fidelity.bracket(index)):
        here = rungs[k]
        if k == 0:
            target, candidates = n_k, []
        else:
            candidates, seen = [], set()
            for row in promotion_order(below):
                if row.config not in seen:
                    candidates.append(row)
                    seen.add(row.config)
            target = min(n_k, len(candidates))
        if len(here) < target and fidelity.cost(r_k) <= left + _TOL:
            if k == 0:
                return Job(index, 0, r_k, None)
            present = {r.config for r in here}
            fresh = [r.config for r in candidates if r.config not in present]
            if fresh:  # else rung k already holds every config it can get
                return Job(index, k, r_k, fresh[0])
        if any(r.state not in FINISHED for r in here):
            return True
        below = here
    return False


def _reserve(fidelity: Fidelity, index: int, rungs: list[list[Row]], left: float) -> float:
    """Cost, within ``left``, of the jobs bracket ``index`` may still need: its plan with what is known of the
    outcomes (a finished rung promotes at most its completed configs), missing jobs that do not fit left out."""
    need, expect = 0.0, 0
    for k, (n_k, r_k) in enumerate(fidelity.bracket(index)):
        here = rungs[k]
        missing = max(0, (n_k if k == 0 else min(n_k, expect)) - len(here))
        fit = max(0, min(missing, int((left - need + _TOL) // fidelity.cost(r_k))))
        need += fit * fidelity.cost(r_k)
        completed = len({r.config for r in here if r.state == "COMPLETE"})
        expect = completed + sum(r.state not in FINISHED for r in here) + fit  # an upper bound until all finish
    return need


def next_jobs(fidelity: Fidelity, rows: Sequence[Row], n: int, cost_left: float) -> list[Job]:
    """Up to ``n`` jobs to start now, in the order to start them, derived from all stored ``rows`` alone.

    ``cost_left`` is the search budget (in full-budget equivalents, see ``Fidelity.cost``) not yet
    spent by any stored row, PENDING and RUNNING ones included; each returned job costs
    ``fidelity.cost(job.budget)`` and together they never exceed it (1e-9 slack). Brackets are worked
    in index order: the lowest bracket with a job that can start now (and fits) gives the next one;
    when every bracket waits on unfinished rows or is finished, the next bracket opens (index: highest
    so far + 1), unless its rung-0 job does not fit. Within a bracket rung 0 is filled with new
    configurations, then, once every row of rung k is finished, rung k+1 takes the best of rung k by
    ``promotion_order`` (FAILED rows are never promoted; a rung with nothing completed ends the bracket).

    The budget goes to brackets in index order too: a bracket may spend only what the remaining plans
    of all earlier brackets leave (their missing rungs, sized by what is known of their outcomes), so
    idle workers opening later brackets never starve an earlier bracket's promotions. A rung whose
    missing jobs do not fit in what its bracket may spend is cut short (counts as full), and the
    bracket goes on from the rows it has if the budget allows; should budget be freed later (an earlier
    bracket's failures shrink its reserve), the cut-short rung is filled up first.

    Deterministic: the result depends on the rows, not their order, and calling with ``n = 1``
    repeatedly (storing each job as a PENDING row and lowering ``cost_left`` by its cost) gives the
    same jobs as one call, so a resumed run continues mid-bracket exactly.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"`n >= 0` must hold (an integer), but got n={n!r}")
    ordered = _check(fidelity, rows)
    brackets: dict[int, list[list[Row]]] = {}
    for r in ordered:
        brackets.setdefault(r.bracket, [[] for _ in fidelity.bracket(r.bracket)])[r.rung].append(r)
    jobs: list[Job] = []
    left = float(cost_left)
    while len(jobs) < n:
        job, free = None, left
        for index in sorted(brackets):
            found = _bracket_job(fidelity, index, brackets[index], free)
            if isinstance(found, Job):
                job = found
                break
            free -= _reserve(fidelity, index, brackets[index], free)  # an earlier bracket's plan comes first
        if job is None:
            index = max(brackets) + 1 if brackets else 0
            budget = fidelity.bracket(index)[0][1]
            if fidelity.cost(budget) > free + _TOL:
                break
            brackets[index] = [[] for _ in fidelity.bracket(index)]
            job = Job(index, 0, budget, None)
        jobs.append(job)
        left -= fidelity.cost(job.budget)
        # a stand-in PENDING row (negative id, never COMPLETE, so it never enters an ordering)
        stand_in = -len(jobs)
        brackets[job.bracket][job.rung].append(
            Row(stand_in, stand_in if job.config is None else job.config, job.bracket, job.rung, job.budget, "PENDING"))
    return jobs


def stopped_at(fidelity: Fidelity, rows: Sequence[Row]) -> dict[int, float]:
    """config -> the largest budget at which it has a COMPLETE row (configs with none are left out).

    For reports ("stopped at 30 epochs"); the budget is the row's own, ``fidelity`` checks the rows.
    """
    out: dict[int, float] = {}
    for r in _check(fidelity, rows):
        if r.state == "COMPLETE":
            out[r.config] = max(out.get(r.config, -math.inf), float(r.budget))
    return out


def planned_trials(fidelity: Fidelity, cost_budget: float) -> int:
    """How many trials (rows) a search of ``cost_budget`` full-budget equivalents runs when none fails:
    the length of next_jobs's plan played out with every row completing (for progress displays)."""
    rows: list[Row] = []
    while True:
        jobs = next_jobs(fidelity, rows, 1, cost_budget - sum(fidelity.cost(r.budget) for r in rows))
        if not jobs:
            return len(rows)
        j = jobs[0]
        i = len(rows)
        rows.append(Row(i, i if j.config is None else j.config, j.bracket, j.rung, j.budget, "COMPLETE", (float(i),)))
