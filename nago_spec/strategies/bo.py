"""Multi-objective BO: GPs for the expensive objectives, NSGA-II over their LCBs and the exact cheap objectives,
then a batch chosen by Monte-Carlo expected hypervolume improvement."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import Problem as PymooProblem
from pymoo.optimize import minimize
from scipy.special import ndtr

from nago_spec.pareto import hv_improvements, pareto_indices, to_minimization
from nago_spec.problem import ConstraintInfo, ObjectiveInfo, Problem
from nago_spec.strategies.base import (
    STREAM_FIT,
    STREAM_NSGA,
    STREAM_RANDOM,
    STREAM_SOBOL,
    Strategy,
    Trial,
)
from nago_spec.strategies.gp import FIT_ERRORS, Surrogates, fit_gps

log = logging.getLogger(__name__)

_BAD = 1e10  # objective/constraint value given to candidates whose cheap metrics could not be computed
#: stream of the Monte-Carlo base samples (normal draws of the posterior, uniform draws of the box)
STREAM_MC = 6


# ---------------------------------------------------------------------------------------------
# The acquisition problem NSGA-II solves
# ---------------------------------------------------------------------------------------------
class _Acquisition(PymooProblem):
    """pymoo's view of the acquisition: minimise F (n x m) over the unit cube subject to G (n x k) <= 0."""

    def __init__(self, fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], d: int, m: int, k: int):
        super().__init__(n_var=d, n_obj=m, n_ieq_constr=k, xl=np.zeros(d), xu=np.ones(d))
        self._fn = fn

    def _evaluate(self, x: np.ndarray, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        F, G = self._fn(x)
        out["F"] = F
        if self.n_ieq_constr:
            out["G"] = G


@dataclass
class _Scores:
    """Everything the optimiser knows of n candidate unit points for one trial id (objectives in minimisation form)."""

    acq: np.ndarray  # n x m: lower confidence bound for modelled objectives, exact value for cheap ones
    mean: np.ndarray  # n x m: posterior mean for modelled objectives, exact for cheap
    sd: np.ndarray  # n x m: posterior std for modelled objectives, 0 for cheap
    G: np.ndarray  # n x k, pymoo constraints (<= 0 feasible); exact when cheap, at the posterior mean when modelled
    G_opt: np.ndarray  # n x k, as G but modelled ones at their optimistic bound (what NSGA-II must satisfy)
    viol: np.ndarray  # n, total violation (sum of positive parts of G)
    pof: np.ndarray  # n, probability of feasibility (exact 0/1 for cheap constraints)
    unc: np.ndarray  # n, log volume of the uncertainty box of the modelled objectives (in y_std units)
    valid: np.ndarray  # n, bool: the cheap metrics could be computed


class BOStrategy(Strategy):
    """Multi-objective BO for expensive objectives, with cheap objectives computed exactly.

    Each ask: one GP per modelled quantity (gp.fit_gps); NSGA-II (pymoo) over the unit cube
    minimising the lower confidence bound of every modelled objective and the exact value of every
    cheap one, subject to the cheap constraints exactly and the modelled ones at their optimistic
    bound; then each point of the batch is the candidate of largest expected hypervolume
    improvement (Monte-Carlo over the posterior, common random numbers) times its probability of
    feasibility, refined by a local search around it. The hypervolume's reference point is the
    front's nadir plus a tenth of its range, or, further out, the worst value a constraint on the
    objective accepts (``params <= 100000`` lets the front grow out to 100k). A batch is built greedily and pending trials
    are accounted for by ``batch_rule``.

    Options:
    - ``beta`` (2.0): width of the confidence bound NSGA-II optimises.
    - ``pop_size`` (48), ``generations`` (25): NSGA-II on the acquisition.
    - ``mc_samples`` (64): posterior draws per candidate for the expected improvement.
    - ``batch_rule`` (``"believer"``): ``"believer"`` (Kriging believer: pending and already chosen
      points enter the GPs and the front at their posterior mean); ``"penalise"`` (local
      penalisation, the NAGO paper's batch rule: the improvement of a candidate is multiplied by
      1 - its correlation, under the GPs' kernels, with each pending or chosen point; the GPs are
      not conditioned); ``"usemo"`` (USeMO: the candidate of largest posterior uncertainty among
      NSGA-II's front, with believer conditioning).
    - ``restarts`` (3), ``fit_iters`` (60): GP hyperparameter fits. ``refit_growth`` (0.15): the
      hyperparameters are fitted afresh when the data has grown by this fraction since the last
      fit (and at every ask up to 20 observations); in between, the GPs condition on all the data
      with the last hyperparameters. Which data a fit uses is a function of the told set, so
      proposals stay deterministic, and a resumed run refits exactly the same GPs.
    - ``dedup_tol`` (1e-3): feature-space distance under which two points count as the same.
    - ``elite_fraction`` (0.25): share of NSGA-II's initial population taken from the observed
      Pareto points (as many again are their perturbations).
    """

    default_options = {
        "beta": 2.0,
        "pop_size": 48,
        "generations": 25,
        "mc_samples": 64,
        "batch_rule": "believer",
        "restarts": 3,
        "fit_iters": 60,
        "refit_growth": 0.15,
        "dedup_tol": 1e-3,
        "elite_fraction": 0.25,
    }
    BATCH_RULES = ("believer", "penalise", "usemo")

    def __init__(
        self,
        problem: Problem,
        *,
        seed: int,
        initial: int = 8,
        batch: int = 2,
        options: Mapping[str, Any] | None = None,
    ):
        super().__init__(problem, seed=seed, initial=initial, batch=batch, options=options)
        if self.options["batch_rule"] not in self.BATCH_RULES:
            raise ValueError(f"batch_rule = {self.options['batch_rule']!r}: must be one of {', '.join(self.BATCH_RULES)}")
        objs = problem.objectives
        self._names = [o.name for o in objs]
        self._sign = np.array([-1.0 if o.direction == "maximize" else 1.0 for o in objs])
        self._cheap_cache: dict[tuple[int, tuple[Any, ...]], np.ndarray] = {}
        self._cheap_names: list[str] = [o.name for o in objs if o.cheap]
        self._model_names: list[str] = [o.name for o in objs if not o.cheap]
        self._fit: tuple[tuple[Any, ...], Surrogates] | None = None  # the last hyperparameter fit and its key
        self.last_fallback: str | None = None  # why the last ask fell back to random proposals, if it did

    # -- the hook ------------------------------------------------------------------------------
    def _ask(self, n: int, next_trial_id: int, history: list[Trial], pending: list[Trial]) -> np.ndarray:
        space = self.problem.space
        self.last_fallback = None
        complete = [t for t in history if t.values is not None and all(nm in t.values for nm in self._names)]
        ids = [next_trial_id + k for k in range(n)]
        U = np.zeros((n, space.dim))
        pend = list(pending)
        bo_slots = []
        for k, tid in enumerate(ids):
            if tid < self.initial or len(complete) < 2:
                U[k] = space.sobol(1, self.child_seed(STREAM_SOBOL), skip=tid)[0]
                pend.append(Trial(tid, space.from_unit(U[k]), U[k]))
            else:
                bo_slots.append(k)
        if not bo_slots:
            return U
        self._cheap_cache.clear()
        slot_ids = [ids[k] for k in bo_slots]
        self._cheap_names, self._model_names = self._quantities(complete, slot_ids[0])
        try:
            U[bo_slots] = self._propose(slot_ids, history, complete, pend)
        except FIT_ERRORS as exc:
            self.last_fallback = f"{type(exc).__name__}: {exc}"
            log.warning(
                "BO proposal for trials %s failed (%s); proposing random points instead", slot_ids, self.last_fallback
            )
            taken = [t.u for t in history] + [t.u for t in pend]
            for k, tid in zip(bo_slots, slot_ids):
                U[k] = self._random_point(tid, np.array(taken).reshape(-1, space.dim))
                taken.append(U[k])
        finally:
            self._cheap_cache.clear()
        return U

    # -- surrogates ----------------------------------------------------------------------------
    def _surrogates(self, rows: list[Trial]) -> Surrogates | None:
        """GPs of the modelled quantities on ``rows`` (complete trials in id order), None when nothing is modelled.

        Hyperparameters come from a fit on the first c rows, c the last refit point <= len(rows)
        (see ``refit_growth``); that fit is cached, and the GPs then condition on every row.
        """
        names = self._model_names
        if not names:
            return None
        space, opts = self.problem.space, self.options
        X = space.features(np.array([t.u for t in rows]).reshape(-1, space.dim))
        Y = np.array([[t.values[nm] for nm in names] for t in rows]).reshape(len(rows), len(names))
        noise = np.array([[(t.noise or {}).get(nm, np.nan) for nm in names] for t in rows]).reshape(Y.shape)
        noise = noise if np.isfinite(noise).any() else None
        c = refit_point(len(rows), float(opts["refit_growth"]))
        if noise is not None and not np.isfinite(noise[:c]).any():
            c = len(rows)  # noise known only for later rows: the fit must see it to have a noise model
        key = (tuple(names), noise is not None, tuple((t.id, tuple(Y[i])) for i, t in enumerate(rows[:c])))
        if self._fit is None or self._fit[0] != key:
            fitted = fit_gps(X[:c], Y[:c], noise=None if noise is None else noise[:c],
                             seed=self.child_seed(STREAM_FIT, c), restarts=int(opts["restarts"]),
                             iters=int(opts["fit_iters"]))
            self._fit = (key, fitted)
        fitted = self._fit[1]
        return fitted if c == len(rows) else fitted.with_data(X, Y, noise)

    # -- model-based proposals -----------------------------------------------------------------
    def _propose(
        self, slot_ids: list[int], history: list[Trial], complete: list[Trial], pending: list[Trial]
    ) -> np.ndarray:
        """Unit points (len(slot_ids) x d) chosen greedily from NSGA-II's candidates (see the class docstring)."""
        space, opts = self.problem.space, self.options
        objs = self.problem.objectives
        rule = str(opts["batch_rule"])
        rows = [t for t in complete if all(nm in t.values for nm in self._model_names)]
        if len(rows) < len(complete):
            log.debug("%d complete trials lack a modelled quantity and are left out of the GPs", len(complete) - len(rows))
        if self._model_names and len(rows) < 2:
            raise ValueError(f"the GPs need 2 trials reporting {self._model_names}, got {len(rows)}")
        surrogates = self._surrogates(rows)
        Xpend = space.features(np.array([t.u for t in pending]).reshape(-1, space.dim))
        if surrogates is not None and rule != "penalise":
            surrogates = surrogates.condition(Xpend)

        # the observed front (minimisation form) and its normalisation: the front's ideal point maps to 0,
        # its nadir to 1, and the reference point is 1.1 (the nadir plus a tenth of the front's range, as
        # BoTorch infers it), so improvements count only where the front is, not out to the worst trial;
        # but out to the bound where a constraint bounds the objective: the worst value the user accepts
        F_obs = to_minimization([t.values for t in complete], objs)
        viol_obs = np.array([self.problem.violation(t.values) for t in complete])
        feasible = viol_obs <= 0
        pool = F_obs[feasible] if feasible.any() else F_obs
        on_front = F_obs[pareto_indices(F_obs, viol_obs)]
        ideal, nadir = on_front.min(axis=0), on_front.max(axis=0)
        worst = pool.max(axis=0)
        span = np.where(nadir > ideal, nadir - ideal,
                        np.where(worst > ideal, worst - ideal, np.maximum(np.abs(worst), 1.0)))
        ref = np.maximum(1.1, (_worst_accepted(objs, self.problem.constraints) - ideal) / span)

        def norm(F: np.ndarray) -> np.ndarray:
            return (np.asarray(F).reshape(-1, len(objs)) - ideal) / span

        front = [row for row in F_obs[feasible]]
        if rule != "penalise":
            for t in pending:
                s = self._scores(t.u[None], t.id, surrogates)
                if s.valid[0] and s.viol[0] <= 0:
                    front.append(s.mean[0])

        cand = self._candidates(self._nsga(slot_ids[0], surrogates, complete, F_obs, viol_obs))
        rng = self.trial_rng(slot_ids[0], STREAM_MC)
        z = rng.standard_normal((int(opts["mc_samples"]), len(objs)))
        box = rng.random((2048, len(objs))) if len(objs) > 3 else None  # exact below four objectives
        taken = [space.features(np.array([t.u for t in history + pending]).reshape(-1, space.dim))]
        penalised = [t.u for t in pending] if rule == "penalise" else []
        out = np.zeros((len(slot_ids), space.dim))
        tol = float(opts["dedup_tol"])

        def value(U: np.ndarray, tid: int, T: np.ndarray) -> tuple[np.ndarray, _Scores, np.ndarray]:
            """Acquisition value (n) of unit points U, with their scores and distance to the taken points."""
            s = self._scores(U, tid, surrogates)
            R = norm(np.array(front)) if front else np.zeros((0, len(objs)))
            v = self._ehvi(s, R, norm, ref, z, box) * s.pof
            if penalised:
                v = v * self._penalty(U, np.array(penalised), surrogates)
            dmin = _min_dist(space.features(U), T)
            return np.where(s.valid & (dmin > tol), v, -np.inf), s, dmin

        for j, tid in enumerate(slot_ids):
            T = np.vstack(taken)
            v, s, dmin = value(cand, tid, T)
            ok = np.isfinite(v)
            if not ok.any():
                log.info("no new candidate for trial %d among NSGA-II's population; proposing a random point", tid)
                u = self._random_point(tid, T)
            else:
                u = cand[self._select(v, s, ok, dmin, rule)]
                if rule != "usemo" and v.max() > 0:
                    u = self._refine(u, float(v.max()), lambda U, tid=tid, T=T: value(U, tid, T)[0], tid)
            out[j] = u
            fu = space.features(u[None])
            taken.append(fu)
            if rule == "penalise":
                penalised.append(u)
                continue
            s_u = self._scores(u[None], tid, surrogates)
            if s_u.valid[0] and s_u.viol[0] <= 0:
                front.append(s_u.mean[0])
            if surrogates is not None:
                surrogates = surrogates.condition(fu)
        return out

    def _select(self, v: np.ndarray, s: _Scores, ok: np.ndarray, dmin: np.ndarray, rule: str) -> int:
        """The candidate to take: the largest acquisition value; when none improves (or with
        ``usemo``), the most uncertain point of the acquisition front among the likely feasible
        ones; with no feasible candidate, the least violating."""
        idx = np.flatnonzero(ok)
        if rule != "usemo" and v[idx].max() > 1e-12:
            return int(idx[int(np.argmax(v[idx]))])
        feas = idx[s.pof[idx] >= 0.5] if (s.pof[idx] >= 0.5).any() else idx[s.viol[idx] <= s.viol[idx].min() + 1e-12]
        if rule == "usemo":
            front = feas[pareto_indices(s.acq[feas], np.zeros(len(feas)))]
            feas = front if len(front) else feas
        if self._model_names and np.isfinite(s.unc[feas]).any():
            return int(feas[int(np.argmax(s.unc[feas]))])
        return int(feas[int(np.argmax(dmin[feas]))])

    def _ehvi(self, s: _Scores, R: np.ndarray, norm: Callable[[np.ndarray], np.ndarray], ref: np.ndarray,
              z: np.ndarray, box: np.ndarray | None) -> np.ndarray:
        """Expected hypervolume improvement (n) over the normalised front ``R`` (r x m), by Monte Carlo:
        the posterior of each modelled objective drawn at the standard normal ``z`` (S x m, shared by
        all candidates), cheap objectives exact; ``box`` (q x m uniform draws) for 4+ objectives."""
        n, m = s.mean.shape
        Y = norm((s.mean[:, None, :] + s.sd[:, None, :] * z[None, :, :]).reshape(-1, m))
        samples = None
        if box is not None:
            lo = np.minimum(Y.min(axis=0), R.min(axis=0) if len(R) else 0.0)
            lo = np.minimum(lo, 0.0)
            samples = lo + (ref - lo) * box
        return hv_improvements(Y, R, ref, samples=samples).reshape(n, -1).mean(axis=1)

    def _penalty(self, U: np.ndarray, P: np.ndarray, surrogates: Surrogates | None) -> np.ndarray:
        """Local penalisation (n): the product over points ``P`` (p x d) of 1 - their largest correlation
        with each of ``U`` (n x d) under the GPs' kernels (NAGO's batch rule, with the GP's own
        correlation as the penalising ball)."""
        if surrogates is None or len(P) == 0:
            return np.ones(len(U))
        space = self.problem.space
        corr = surrogates.correlation(space.features(U), space.features(P))  # m x n x p
        return np.prod(1.0 - corr.max(axis=0), axis=1)

    def _refine(self, u: np.ndarray, v0: float, value: Callable[[np.ndarray], np.ndarray], trial_id: int) -> np.ndarray:
        """A local search around ``u`` (acquisition ``v0``): Gaussian perturbations at shrinking scales, each
        also with near-bound coordinates snapped onto the bound, moving to the best point whenever it improves."""
        space = self.problem.space
        rng = self.trial_rng(trial_id, STREAM_MC, 1)
        best, best_v = u, v0
        for scale in (0.05, 0.01):
            cloud = np.clip(best + rng.normal(0.0, scale, (24, space.dim)), 0.0, 1.0)
            cloud = space.snap(np.vstack([cloud, _snap_to_bounds(cloud, 2 * scale)]))
            v = value(cloud)
            i = int(np.argmax(v))
            if v[i] > best_v * (1 + 1e-9):
                best, best_v = cloud[i], float(v[i])
        return best

    def _candidates(self, pop: np.ndarray) -> np.ndarray:
        """NSGA-II's population plus its points with near-bound coordinates on the bound (fronts often lie
        on the boundary of the box, which NSGA-II's operators approach but rarely reach)."""
        space = self.problem.space
        snapped = _snap_to_bounds(pop, 0.02)
        moved = np.any(snapped != pop, axis=1)
        return space.snap(np.vstack([pop, snapped[moved]]))

    def _nsga(
        self, trial_id: int, surrogates: Surrogates | None, complete: list[Trial], F_obs: np.ndarray,
        viol_obs: np.ndarray
    ) -> np.ndarray:
        """NSGA-II's final population (p x d) on the acquisition for ``trial_id``."""
        space, opts = self.problem.space, self.options
        pop = int(opts["pop_size"])
        rng = self.trial_rng(trial_id, STREAM_NSGA)
        n_elite = int(round(pop * float(opts["elite_fraction"])))
        elite_idx = pareto_indices(F_obs, viol_obs)[:n_elite]
        elite = np.array([complete[i].u for i in elite_idx]).reshape(-1, space.dim)
        parts = [elite]
        if len(elite):
            parents = elite[rng.integers(0, len(elite), n_elite)]
            parts.append(np.clip(parents + rng.normal(0.0, 0.05, parents.shape), 0.0, 1.0))
        n_sobol = max(pop - sum(len(p) for p in parts), 0)
        parts.append(space.sobol(n_sobol, self.child_seed(STREAM_NSGA, trial_id)))
        X0 = np.vstack(parts)[:pop]

        def fn(U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            sc = self._scores(U, trial_id, surrogates)
            return sc.acq, sc.G_opt

        k = len(self.problem.constraints)
        problem = _Acquisition(fn, space.dim, len(self._names), k)
        algo = NSGA2(pop_size=pop, sampling=X0, eliminate_duplicates=True)
        seed = self.child_seed(STREAM_NSGA, trial_id, 1)
        res = minimize(problem, algo, ("n_gen", int(opts["generations"])), seed=seed, verbose=False)
        return np.clip(np.asarray(res.pop.get("X"), dtype=float), 0.0, 1.0)

    # -- evaluation of candidates --------------------------------------------------------------
    def _quantities(self, complete: list[Trial], trial_id: int) -> tuple[list[str], list[str]]:
        """(names cheap_fn computes, names modelled by a GP): declared objectives by their ``cheap``
        flag; a constraint-only name is cheap when cheap_fn returns it, else modelled when trials report it."""
        objs = self.problem.objectives
        cheap = [o.name for o in objs if o.cheap]
        model = [o.name for o in objs if not o.cheap]
        extra = [c.objective for c in self.problem.constraints if c.objective not in self._names]
        extra = list(dict.fromkeys(extra))
        if extra:
            probe: Mapping[str, float] = {}
            if self.problem.cheap_fn is not None:
                try:
                    centre = self.problem.space.from_unit(np.full(self.problem.space.dim, 0.5))
                    probe = self.problem.cheap_fn(centre, trial_id)
                except Exception as exc:  # a user metric failing on one point must not stop the search
                    log.debug("cheap_fn failed on the probe point: %s", exc)
            for name in extra:
                if name in probe:
                    cheap.append(name)
                elif any(name in t.values for t in complete):
                    model.append(name)
                else:
                    log.warning("constraint on %r ignored: neither cheap_fn nor any trial reports it", name)
        return cheap, model

    def _cheap(self, U: np.ndarray, trial_id: int) -> np.ndarray:
        """Exact cheap values (n x c) of unit points ``U`` (n x d) for ``trial_id``; NaN rows where cheap_fn failed."""
        names = self._cheap_names
        out = np.full((len(U), len(names)), np.nan)
        if not names:
            return out
        fn = self.problem.cheap_fn
        assert fn is not None  # Problem guarantees a cheap_fn when anything is cheap
        for r, params in enumerate(self.problem.space.from_unit_many(U)):
            key = (trial_id, tuple(params.values()))
            row = self._cheap_cache.get(key)
            if row is None:
                row = np.full(len(names), np.nan)
                try:
                    vals = fn(params, trial_id)
                    row = np.array([float(vals[nm]) if nm in vals else np.nan for nm in names])
                except Exception as exc:  # a point whose metric cannot be computed is a bad point, not a crash
                    log.debug("cheap_fn failed for %s: %s", params, exc)
                self._cheap_cache[key] = row
            out[r] = row
        return out

    def _scores(self, U: np.ndarray, trial_id: int, surrogates: Surrogates | None) -> _Scores:
        """Acquisition, posterior, constraints and uncertainty of unit points ``U`` (n x d) for ``trial_id``."""
        space, beta = self.problem.space, float(self.options["beta"])
        U = np.asarray(U, dtype=float).reshape(-1, space.dim)
        n = len(U)
        C = self._cheap(U, trial_id)
        valid = np.isfinite(C).all(axis=1)
        q = len(self._model_names)
        if surrogates is not None:
            mu, sd = surrogates.predict(space.features(U))
        else:
            mu, sd = np.zeros((n, q)), np.zeros((n, q))
        unc = np.zeros(n)
        for i, nm in enumerate(self._model_names):
            if nm in self._names:
                unc += np.log(np.maximum(sd[:, i] / surrogates.y_std[i], 1e-300))
        col = {nm: i for i, nm in enumerate(self._model_names)}
        cheap = {nm: C[:, i] for i, nm in enumerate(self._cheap_names)}
        m = len(self._names)
        acq, mean, sdev = np.zeros((n, m)), np.zeros((n, m)), np.zeros((n, m))
        for i, nm in enumerate(self._names):
            if nm in cheap:
                acq[:, i] = mean[:, i] = self._sign[i] * cheap[nm]
            else:
                mean[:, i] = self._sign[i] * mu[:, col[nm]]
                sdev[:, i] = sd[:, col[nm]]
                acq[:, i] = mean[:, i] - beta * sdev[:, i]  # the optimistic bound in minimisation form
        cons = self.problem.constraints
        G = np.zeros((n, len(cons)))
        G_opt = np.zeros((n, len(cons)))
        pof = np.ones(n)
        for k, c in enumerate(cons):
            if c.objective in cheap:
                G[:, k] = G_opt[:, k] = _signed_violation(c, cheap[c.objective], n)
                pof *= G[:, k] <= 0
            elif c.objective in col:
                mu_c, sd_c = mu[:, col[c.objective]], np.maximum(sd[:, col[c.objective]], 1e-12)
                G[:, k] = _signed_violation(c, mu_c, n)
                G_opt[:, k] = _signed_violation(c, mu_c, n) - beta * sd_c  # feasible somewhere in the band
                pof *= _probability_within(c, mu_c, sd_c)
            else:
                G[:, k] = G_opt[:, k] = -1.0  # nothing reports it: it holds everywhere
        acq[~valid], mean[~valid], G[~valid], G_opt[~valid] = _BAD, _BAD, _BAD, _BAD
        pof[~valid] = 0.0
        viol = np.maximum(G, 0.0).sum(axis=1)
        return _Scores(acq, mean, sdev, G, G_opt, viol, pof, unc, valid)

    def _random_point(self, trial_id: int, taken: np.ndarray, tries: int = 64) -> np.ndarray:
        """A seeded random unit point for ``trial_id``: new (not in ``taken``, n x d) and feasible on the cheap
        constraints when one of ``tries`` draws is; else the least violating new draw."""
        space = self.problem.space
        rng = self.trial_rng(trial_id, STREAM_RANDOM)
        U = rng.random((tries, space.dim))
        T = space.features(np.asarray(taken).reshape(-1, space.dim))
        new = _min_dist(space.features(U), T) > float(self.options["dedup_tol"])
        if not new.any():
            new[:] = True
        cheap_constraints = [c for c in self.problem.constraints if c.objective in self._cheap_names]
        if not cheap_constraints or self.problem.cheap_fn is None:
            return U[int(np.argmax(new))]
        C = self._cheap(U, trial_id)
        cols = {nm: C[:, i] for i, nm in enumerate(self._cheap_names)}
        viol = sum(np.maximum(_signed_violation(c, cols[c.objective], tries), 0.0) for c in cheap_constraints)
        viol = np.where(np.isfinite(viol) & new, viol, np.inf)
        return U[int(np.argmin(viol))]


def refit_point(n: int, growth: float, always: int = 20) -> int:
    """The number of observations the hyperparameters are fitted on when ``n`` are known: ``n`` itself up
    to ``always``, then the last point of the sequence always, ceil(always·(1+growth)), ... that is <= n."""
    if n <= always or growth <= 0:
        return n
    c = always
    while True:
        nxt = max(c + 1, math.ceil(c * (1.0 + growth)))
        if nxt > n:
            return c
        c = nxt


def _probability_within(c: ConstraintInfo, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """P(c.min <= v <= c.max) for v ~ N(mu, sd²) (n)."""
    upper = ndtr((c.max - mu) / sd) if c.max is not None else np.ones_like(mu)
    lower = ndtr((c.min - mu) / sd) if c.min is not None else np.zeros_like(mu)
    return np.clip(upper - lower, 0.0, 1.0)


def _worst_accepted(objectives: Sequence[ObjectiveInfo], constraints: Sequence[ConstraintInfo]) -> np.ndarray:
    """Per objective (minimisation form), the worst value its constraints accept (the tightest bound on
    the bad side); -inf where none bounds it."""
    out = np.full(len(objectives), np.inf)
    for i, o in enumerate(objectives):
        for c in constraints:
            bound = c.max if o.direction == "minimize" else (None if c.min is None else -c.min)
            if c.objective == o.name and bound is not None:
                out[i] = min(out[i], bound)
    return np.where(np.isfinite(out), out, -np.inf)


def _snap_to_bounds(U: np.ndarray, tol: float) -> np.ndarray:
    """``U`` with every coordinate within ``tol`` of 0 or 1 set to it."""
    U = np.asarray(U, dtype=float)
    return np.where(U < tol, 0.0, np.where(U > 1.0 - tol, 1.0, U))


def _signed_violation(c: ConstraintInfo, v: np.ndarray | None, n: int) -> np.ndarray:
    """pymoo form of ``c`` at values ``v`` (n): <= 0 when satisfied, its positive part the violation.

    ``v`` is None for a name nothing reports: the constraint then holds everywhere.
    """
    if v is None:
        return np.full(n, -1.0)
    g = np.full(len(v), -np.inf)
    if c.min is not None:
        g = np.maximum(g, c.min - v)
    if c.max is not None:
        g = np.maximum(g, v - c.max)
    return np.where(np.isfinite(g), g, np.where(np.isnan(v), _BAD, -1.0))


def _min_dist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Distance (n) from each row of ``A`` (n x d') to its nearest row of ``B`` (r x d'); inf when r = 0."""
    if len(B) == 0:
        return np.full(len(A), np.inf)
    return np.sqrt(((A[:, None, :] - B[None, :, :]) ** 2).sum(axis=-1)).min(axis=1)
