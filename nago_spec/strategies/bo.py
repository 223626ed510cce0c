"""Multi-objective BO: GPs for the expensive objectives and constraints, cheap objectives computed exactly, and
each point chosen by a noisy expected hypervolume improvement (qNEHVI's idea) times its probability of success."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import Problem as PymooProblem
from pymoo.optimize import minimize
from scipy.optimize import minimize as scipy_minimize
from scipy.special import ndtri
from scipy.stats import qmc

from nago_spec.pareto import improvement_boxes, non_dominated, pareto_indices, to_minimization
from nago_spec.problem import ConstraintInfo, ObjectiveInfo, Problem
from nago_spec.space import FloatParam
from nago_spec.strategies.base import (
    STREAM_FIT,
    STREAM_NSGA,
    STREAM_RANDOM,
    STREAM_SOBOL,
    Strategy,
    Trial,
)
from nago_spec.strategies.gp import FIT_ERRORS, JITTER, Surrogates, _cholesky, fit_gps, matern52

log = logging.getLogger(__name__)

_BAD = 1e10  # objective/constraint value given to candidates whose cheap metrics could not be computed
#: stream of the Monte-Carlo base samples (normal draws of the joint posterior, uniform draws of the box)
STREAM_MC = 6
#: stream of the raw candidates (Sobol points and perturbations of the front)
STREAM_RAW = 7
#: width, in units of a quantity's standard deviation, of the sigmoid that smooths a modelled constraint
_CONSTRAINT_TEMPERATURE = 1e-3
#: candidates x samples x boxes evaluated together (16 MB of doubles per objective)
_BLOCK = 1 << 21


# ---------------------------------------------------------------------------------------------
# The acquisition problem NSGA-II solves for the candidate pool
# ---------------------------------------------------------------------------------------------
class _Acquisition(PymooProblem):
    """pymoo's view of the optimistic front: minimise F (n x m) over the unit cube subject to G (n x k) <= 0."""

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
    """The marginal posterior of n candidate unit points for one trial id (objectives in minimisation form)."""

    acq: np.ndarray  # n x m: lower confidence bound for modelled objectives, exact value for cheap ones
    mean: np.ndarray  # n x m: posterior mean for modelled objectives, exact for cheap
    G: np.ndarray  # n x k, pymoo constraints (<= 0 feasible); exact when cheap, at the posterior mean when modelled
    G_opt: np.ndarray  # n x k, as G but modelled ones at their optimistic bound (what NSGA-II must satisfy)
    viol: np.ndarray  # n, total violation (sum of positive parts of G)
    unc: np.ndarray  # n, log volume of the uncertainty box of the modelled objectives (in y_std units)
    valid: np.ndarray  # n, bool: the cheap metrics could be computed


@dataclass
class _Region:
    """Per posterior sample s, the part of the box below the reference point that its front does not dominate.

    Two or three objectives: a union of disjoint boxes ``lower``/``upper`` (S x J x m, padded with empty
    boxes), so a point y improves sample s's hypervolume by sum_j prod_i (u_ji - max(y_i, l_ji))+.
    Four or more: ``points`` (S x Q x m) drawn uniformly in [lo, ref] and kept where the front does not
    dominate them (+inf rows pad), each worth ``weight`` (S) of volume.
    """

    lower: torch.Tensor | None = None
    upper: torch.Tensor | None = None
    points: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    size: int = 1  # J or Q: the work per candidate and sample

    def improvement(self, Y: torch.Tensor) -> torch.Tensor:
        """Hypervolume improvement (n x S) of the points ``Y`` (n x S x m), each alone, sample by sample."""
        if self.points is not None:
            inside = (Y[:, :, None, :] <= self.points[None]).all(-1)  # n x S x Q
            return inside.sum(-1).to(Y.dtype) * self.weight[None, :]
        side = (self.upper[None] - torch.maximum(Y[:, :, None, :], self.lower[None])).clamp_min(0.0)  # n x S x J x m
        volume = side[..., 0]
        for i in range(1, side.shape[-1]):  # an explicit product: prod's backward is slow where sides are 0
            volume = volume * side[..., i]
        return volume.sum(-1)


class BOStrategy(Strategy):
    """Multi-objective BO for expensive objectives, with cheap objectives computed exactly.

    Each ask fits one GP per modelled quantity (gp.fit_gps: expensive objectives and the constraints
    cheap_fn does not compute) and chooses every point of the batch by the noisy expected
    hypervolume improvement (NEHVI, Daulton et al. 2021) times its probability of success:

    - **The model.** The GPs see the cheap quantities as inputs beside the parameters (``_inputs``): a
      network's exact parameter count tells much of its error.
    - **Noise-aware.** The front a candidate must improve on is not the observed values (noise
      included, so a lucky draw would look unbeatable and an unlucky one easy to beat) but S joint
      posterior samples of the latent values at the observed points; the candidate's own sample is
      drawn jointly with them. A candidate near an observed point is then sampled close to it, and
      gains only what the model believes, not the noise. Cheap objectives are exact in every sample.
    - **Constraints** modelled by a GP are sampled jointly too: a sample counts only where it is
      feasible, at the candidate and at the front's points; cheap ones hold or fail exactly.
    - **Failures.** A classifier of where trials fail (NaN loss, timeout, out of memory; a GP on the
      failure indicator, ``_success_model``) gives each candidate a probability of success, which
      multiplies the acquisition, so a failing region is not proposed again.
    - **Reference point.** Per objective, the user's ``ref`` where given, else the worst value a
      constraint accepts, else inferred from the data (``_reference_points``): full credit below an
      inner point at the observed front's nadir, and credit up to an outer one for points that extend
      the front, as far as the model's median expects them to (``_clamp_extension``). A given point
      counts once some feasible observation is better than it in every objective it bounds; until
      then the credit is inferred, so a search that starts far from the box still finds its way in.
    - **Pending and batch points** (``batch_rule = "joint"``) join the front through their joint
      posterior samples (qNEHVI's treatment of pending points), so a batch spreads out.
    - **Optimised** over a pool of candidates: Sobol points and Gaussian perturbations of the front's
      points, plus, where cheap objectives give the space a structure random points miss, NSGA-II's
      population on the optimistic front (each modelled objective at its lower confidence bound,
      cheap ones exact, the cheap constraints exactly and the modelled ones at their optimistic
      bound). The best candidate is then refined: by L-BFGS-B on the differentiable Monte-Carlo
      NEHVI (torch) over the float parameters when every objective is modelled, else by a local
      random search.

    Options:
    - ``mc_samples`` (64): joint posterior samples.
    - ``raw_samples`` (256): Sobol candidates per ask.
    - ``batch_rule`` (``"joint"``): ``"joint"`` (pending and chosen points enter the front through
      their posterior samples); ``"believer"`` (as joint, but the GPs are first conditioned on those
      points at their posterior mean, the Kriging believer); ``"penalise"`` (local penalisation, the
      NAGO paper's batch rule: the improvement of a candidate is multiplied by 1 - its correlation,
      under the GPs' kernels, with each pending or chosen point, which do not enter the front);
      ``"usemo"`` (USeMO: the candidate of largest posterior uncertainty on NSGA-II's optimistic
      front, with believer conditioning).
    - ``beta`` (2.0): width of the confidence bound NSGA-II optimises.
    - ``pop_size`` (48), ``generations`` (25): NSGA-II for the candidate pool (with cheap objectives).
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
        "mc_samples": 64,
        "raw_samples": 256,
        "batch_rule": "joint",
        "beta": 2.0,
        "pop_size": 48,
        "generations": 25,
        "restarts": 3,
        "fit_iters": 60,
        "refit_growth": 0.15,
        "dedup_tol": 1e-3,
        "elite_fraction": 0.25,
    }
    BATCH_RULES = ("joint", "believer", "penalise", "usemo")
    #: candidates refined per point of a batch
    REFINE_STARTS = 1

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
        self._fit: tuple[tuple[Any, ...], Surrogates, _CheapScale | None] | None = None  # the last fit, its key
        self._scale: _CheapScale | None = None  # how the GP inputs scale the cheap quantities
        self._fail_fit: tuple[tuple[Any, ...], Surrogates] | None = None  # the failure classifier and its key
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
            if self.in_design(tid, len(complete)):
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
        opts = self.options
        U = np.array([t.u for t in rows]).reshape(-1, self.problem.space.dim)
        C = np.array([self._observed_cheap(t) for t in rows]).reshape(len(rows), -1)
        Y = np.array([[t.values[nm] for nm in names] for t in rows]).reshape(len(rows), len(names))
        noise = np.array([[(t.noise or {}).get(nm, np.nan) for nm in names] for t in rows]).reshape(Y.shape)
        noise = noise if np.isfinite(noise).any() else None
        c = refit_point(len(rows), float(opts["refit_growth"]))
        if noise is not None and not np.isfinite(noise[:c]).any():
            c = len(rows)  # noise known only for later rows: the fit must see it to have a noise model
        key = (tuple(names), noise is not None, tuple((t.id, tuple(Y[i])) for i, t in enumerate(rows[:c])))
        if self._fit is None or self._fit[0] != key:
            self._scale = _CheapScale.of(C[:c])
            fitted = fit_gps(self._inputs(U[:c], C[:c]), Y[:c], noise=None if noise is None else noise[:c],
                             seed=self.child_seed(STREAM_FIT, c), restarts=int(opts["restarts"]),
                             iters=int(opts["fit_iters"]))
            self._fit = (key, fitted, self._scale)
        fitted, self._scale = self._fit[1], self._fit[2]
        return fitted if c == len(rows) else fitted.with_data(self._inputs(U, C), Y, noise)

    def _inputs(self, U: np.ndarray, C: np.ndarray) -> np.ndarray:
        """The GPs' inputs (n x d'') of unit points ``U`` (n x d) whose cheap quantities are ``C`` (n x c):
        the space's features, then each cheap quantity scaled to the unit interval of the fitted data
        (see ``_CheapScale``). Exact and known for every candidate, a cheap quantity such as a network's
        parameter count says much of its error: as an input it lets the GP carry what a few small
        networks taught it to every other small network, however the generator reached them."""
        F = self.problem.space.features(np.asarray(U).reshape(-1, self.problem.space.dim))
        if self._scale is None:
            return F
        return np.hstack([F, self._scale(np.asarray(C, dtype=float).reshape(len(F), -1))])

    # -- model-based proposals -----------------------------------------------------------------
    def _propose(
        self, slot_ids: list[int], history: list[Trial], complete: list[Trial], pending: list[Trial]
    ) -> np.ndarray:
        """Unit points (len(slot_ids) x d) chosen greedily by NEHVI (see the class docstring)."""
        space, opts = self.problem.space, self.options
        objs = self.problem.objectives
        rule = str(opts["batch_rule"])
        rows = [t for t in complete if all(nm in t.values for nm in self._model_names)]
        if len(rows) < len(complete):
            log.debug("%d complete trials lack a modelled quantity and are left out of the GPs", len(complete) - len(rows))
        if self._model_names and len(rows) < 2:
            raise ValueError(f"the GPs need 2 trials reporting {self._model_names}, got {len(rows)}")
        surrogates = self._surrogates(rows)
        feat = lambda U: space.features(np.asarray(U).reshape(-1, space.dim))  # noqa: E731
        if surrogates is not None and rule in ("believer", "usemo") and pending:
            surrogates = surrogates.condition(np.vstack([self._inputs(t.u[None], self._cheap(t.u[None], t.id))
                                                         for t in pending]))

        F_obs = to_minimization([t.values for t in complete], objs)
        viol_obs = np.array([self.problem.violation(t.values) for t in complete])
        success = self._success_model(history)
        cand = self._candidates(slot_ids[0], surrogates, complete, F_obs, viol_obs)
        sc = self._scores(cand, slot_ids[0], surrogates)
        predicted = sc.mean[sc.valid & (sc.viol <= 0)]
        frame = _Frame.of(F_obs, viol_obs, objs, self.problem.constraints, predicted)
        rng = self.trial_rng(slot_ids[0], STREAM_MC)
        S = int(opts["mc_samples"]) if surrogates is not None else 1
        # the baseline: complete rows (their latent values), then pending points, then this batch's points
        base_u = [t.u for t in rows]
        base_cheap = [self._observed_cheap(t) for t in rows]
        if rule != "penalise":
            base_u += [t.u for t in pending]
            base_cheap += [self._cheap(t.u[None], t.id)[0] for t in pending]
        Z = _normal_draws(S, len(base_u) + len(slot_ids), rng)
        box = rng.random((1024, len(objs))) if len(objs) > 3 else None
        taken = [feat([t.u for t in history + pending])]
        penalised = [t.u for t in pending] if rule == "penalise" else []
        out = np.zeros((len(slot_ids), space.dim))
        tol = float(opts["dedup_tol"])

        for j, tid in enumerate(slot_ids):
            T = np.vstack(taken)
            acq = _NEHVI(self, tid, surrogates, frame, np.array(base_u).reshape(-1, space.dim),
                         np.array(base_cheap).reshape(len(base_u), -1), Z, box, success,
                         np.array(penalised).reshape(-1, space.dim))

            def value(U: np.ndarray, acq: _NEHVI = acq, T: np.ndarray = T) -> np.ndarray:
                v = acq.value(U)
                return np.where(_min_dist(feat(U), T) > tol, v, -np.inf)

            v = value(cand)
            ok = np.isfinite(v)
            if not ok.any():
                log.info("no new candidate for trial %d; proposing a random point", tid)
                u = self._random_point(tid, T)
            elif rule == "usemo" or v[ok].max() <= 1e-12 * max(1.0, acq.volume):
                u = cand[self._least_known(cand, tid, surrogates, ok, rule)]
            else:
                u = self._refine(cand, v, value, acq, tid)
            out[j] = u
            taken.append(feat(u[None]))
            if rule == "penalise":
                penalised.append(u)
                continue
            base_u.append(u)
            base_cheap.append(self._cheap(u[None], tid)[0])
            if rule in ("believer", "usemo") and surrogates is not None:
                surrogates = surrogates.condition(self._inputs(u[None], base_cheap[-1][None]))
        return out

    def _least_known(self, cand: np.ndarray, tid: int, surrogates: Surrogates | None, ok: np.ndarray,
                     rule: str) -> int:
        """When no candidate is expected to improve (or with ``usemo``): the most uncertain point of the
        optimistic front among the likely feasible candidates; with none feasible, the least violating."""
        s = self._scores(cand, tid, surrogates)
        idx = np.flatnonzero(ok & s.valid)
        if len(idx) == 0:
            idx = np.flatnonzero(ok)
        feas = idx[s.viol[idx] <= 0] if (s.viol[idx] <= 0).any() else idx[s.viol[idx] <= s.viol[idx].min() + 1e-12]
        if rule == "usemo":
            front = feas[pareto_indices(s.acq[feas], np.zeros(len(feas)))]
            feas = front if len(front) else feas
        if self._model_names and np.isfinite(s.unc[feas]).any():
            return int(feas[int(np.argmax(s.unc[feas]))])
        return int(feas[0])

    def _refine(self, cand: np.ndarray, v: np.ndarray, value: Callable[[np.ndarray], np.ndarray],
                acq: _NEHVI, tid: int) -> np.ndarray:
        """The best point found from the best distinct candidates: L-BFGS-B on the float parameters where the
        acquisition is differentiable, else a local random search; the candidate itself when nothing improves."""
        space = self.problem.space
        order = np.argsort(-v)
        starts: list[int] = []
        for i in order:
            if not np.isfinite(v[i]) or v[i] <= 0 or len(starts) == self.REFINE_STARTS:
                break
            if not starts or _min_dist(cand[i][None], cand[starts]).min() > 0.02:
                starts.append(int(i))
        best, best_v = cand[order[0]], float(v[order[0]])
        floats = np.array([isinstance(p, FloatParam) for p in space.params])
        if acq.differentiable and floats.any():
            U = self._gradient_refine(cand[starts], floats, acq)
        else:
            U = np.vstack([self._local_search(cand[i], float(v[i]), value, tid) for i in starts])
        vu = value(U)
        i = int(np.argmax(vu))
        if vu[i] > best_v * (1 + 1e-9):
            best = U[i]
        return best

    def _gradient_refine(self, U0: np.ndarray, floats: np.ndarray, acq: _NEHVI, maxiter: int = 30) -> np.ndarray:
        """L-BFGS-B (scipy, bounds [0, 1]) on the float coordinates of the starts ``U0`` (k x d), the others
        fixed, maximising the sum of their acquisition values (independent per start)."""
        space = self.problem.space
        k = len(U0)
        base = torch.as_tensor(space.features(U0), dtype=torch.float64)  # k x d'
        cols = torch.as_tensor(space.feature_columns()[floats], dtype=torch.long)

        def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
            xt = torch.as_tensor(x.reshape(k, -1), dtype=torch.float64).requires_grad_(True)
            F = base.index_copy(1, cols, xt)
            val = acq.value_tensor(F).sum()
            (grad,) = torch.autograd.grad(val, xt)
            return -float(val.detach()), -grad.numpy().reshape(-1).astype(float)

        x0 = U0[:, floats].reshape(-1)
        try:
            res = scipy_minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * len(x0),
                                 options={"maxiter": maxiter})
            x = np.clip(res.x, 0.0, 1.0)
        except (ValueError, RuntimeError) as exc:  # a NaN gradient on a degenerate posterior: keep the starts
            log.debug("gradient refinement failed (%s); keeping the starting points", exc)
            x = x0
        U = U0.copy()
        U[:, floats] = x.reshape(k, -1)
        return U

    def _local_search(self, u: np.ndarray, v0: float, value: Callable[[np.ndarray], np.ndarray],
                      trial_id: int) -> np.ndarray:
        """A local search around ``u`` (acquisition ``v0``): Gaussian perturbations at shrinking scales, each
        also with near-bound coordinates snapped onto the bound, moving to the best point whenever it improves."""
        space = self.problem.space
        rng = self.trial_rng(trial_id, STREAM_MC, 1, _u_key(u))
        best, best_v = u, v0
        for scale in (0.05, 0.01):
            cloud = np.clip(best + rng.normal(0.0, scale, (24, space.dim)), 0.0, 1.0)
            cloud = space.snap(np.vstack([cloud, _snap_to_bounds(cloud, 2 * scale)]))
            v = value(cloud)
            i = int(np.argmax(v))
            if v[i] > best_v * (1 + 1e-9):
                best, best_v = cloud[i], float(v[i])
        return best

    # -- candidates ----------------------------------------------------------------------------
    def _candidates(self, trial_id: int, surrogates: Surrogates | None, complete: list[Trial],
                    F_obs: np.ndarray, viol_obs: np.ndarray) -> np.ndarray:
        """The pool the acquisition is maximised over: NSGA-II's population on the optimistic front, Sobol
        points, and Gaussian perturbations of the observed front's points; near-bound coordinates of each
        also snapped onto the bound (fronts often lie on the boundary of the box)."""
        space, opts = self.problem.space, self.options
        rng = self.trial_rng(trial_id, STREAM_RAW)
        front = np.array([complete[i].u for i in pareto_indices(F_obs, viol_obs)]).reshape(-1, space.dim)
        parts = [space.sobol(int(opts["raw_samples"]), self.child_seed(STREAM_RAW, trial_id))]
        if self._cheap_names or opts["batch_rule"] == "usemo":
            # exact objectives give the optimistic front a structure random points miss (the parameter
            # count of a network space); elsewhere the gradient refinement finds the optima
            parts.append(self._nsga(trial_id, surrogates, complete, F_obs, viol_obs))
        for scale in (0.1, 0.02):
            parents = front[rng.integers(0, len(front), 32)] if len(front) else np.zeros((0, space.dim))
            parts.append(np.clip(parents + rng.normal(0.0, scale, parents.shape), 0.0, 1.0))
        return space.snap(np.vstack(parts))

    def _nsga(
        self, trial_id: int, surrogates: Surrogates | None, complete: list[Trial], F_obs: np.ndarray,
        viol_obs: np.ndarray
    ) -> np.ndarray:
        """NSGA-II's final population (p x d) on the optimistic front for ``trial_id``."""
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

    # -- failures ------------------------------------------------------------------------------
    def _success_model(self, history: list[Trial]) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """P(success) (n) at space features (n x d'), None while no trial has failed.

        A classifier of where trials fail (NaN loss, timeout, out of memory): a GP regression on the
        failure indicator of every told trial (least-squares classification, Rasmussen and Williams
        2006, section 6.5) with its own ARD lengthscales, so it learns which parameters failures depend
        on; P(success) is 1 minus its posterior mean, clipped to [0, 1]. Fitted on the same schedule as
        the objectives' GPs.
        """
        failed = np.array([t.values is None for t in history], dtype=float)
        if not failed.any():
            return None
        space, opts = self.problem.space, self.options
        c = refit_point(len(history), float(opts["refit_growth"]))
        X = space.features(np.array([t.u for t in history]))
        key = tuple((t.id, bool(f)) for t, f in zip(history[:c], failed[:c]))
        if self._fail_fit is None or self._fail_fit[0] != key:
            fitted = fit_gps(X[:c], failed[:c, None], seed=self.child_seed(STREAM_FIT, c, 1),
                             restarts=int(opts["restarts"]), iters=int(opts["fit_iters"]))
            self._fail_fit = (key, fitted)
        gp = self._fail_fit[1]
        gp = gp if c == len(history) else gp.with_data(X, failed[:, None])

        def p_success(A: torch.Tensor) -> torch.Tensor:
            mean, _, _ = gp.posterior(A)
            return (1.0 - gp.untransform(mean[0], 0)).clamp(0.0, 1.0)

        return p_success

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

    def _observed_cheap(self, t: Trial) -> np.ndarray:
        """The cheap values (c) a complete trial reported (computed afresh where it did not report one)."""
        row = np.array([float(t.values.get(nm, np.nan)) for nm in self._cheap_names])
        if not np.isfinite(row).all():
            row = np.where(np.isfinite(row), row, self._cheap(t.u[None], t.id)[0])
        return row

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
        """Optimistic bound, posterior mean, constraints and uncertainty of unit points ``U`` (n x d)."""
        space, beta = self.problem.space, float(self.options["beta"])
        U = np.asarray(U, dtype=float).reshape(-1, space.dim)
        n = len(U)
        C = self._cheap(U, trial_id)
        valid = np.isfinite(C).all(axis=1)
        q = len(self._model_names)
        if surrogates is not None:
            mu, sd = surrogates.predict(self._inputs(U, C))
        else:
            mu, sd = np.zeros((n, q)), np.zeros((n, q))
        unc = np.zeros(n)
        for i, nm in enumerate(self._model_names):
            if nm in self._names:
                unc += np.log(np.maximum(sd[:, i] / surrogates.y_std[i], 1e-300))
        col = {nm: i for i, nm in enumerate(self._model_names)}
        cheap = {nm: C[:, i] for i, nm in enumerate(self._cheap_names)}
        m = len(self._names)
        acq, mean = np.zeros((n, m)), np.zeros((n, m))
        for i, nm in enumerate(self._names):
            if nm in cheap:
                acq[:, i] = mean[:, i] = self._sign[i] * cheap[nm]
            else:
                mean[:, i] = self._sign[i] * mu[:, col[nm]]
                acq[:, i] = mean[:, i] - beta * sd[:, col[nm]]  # the optimistic bound in minimisation form
        cons = self.problem.constraints
        G = np.zeros((n, len(cons)))
        G_opt = np.zeros((n, len(cons)))
        for k, c in enumerate(cons):
            if c.objective in cheap:
                G[:, k] = G_opt[:, k] = _signed_violation(c, cheap[c.objective], n)
            elif c.objective in col:
                mu_c, sd_c = mu[:, col[c.objective]], np.maximum(sd[:, col[c.objective]], 1e-12)
                G[:, k] = _signed_violation(c, mu_c, n)
                G_opt[:, k] = G[:, k] - beta * sd_c  # feasible somewhere in the band
            else:
                G[:, k] = G_opt[:, k] = -1.0  # nothing reports it: it holds everywhere
        acq[~valid], mean[~valid], G[~valid], G_opt[~valid] = _BAD, _BAD, _BAD, _BAD
        viol = np.maximum(G, 0.0).sum(axis=1)
        return _Scores(acq, mean, G, G_opt, viol, unc, valid)

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


# ---------------------------------------------------------------------------------------------
# The frame: normalisation and reference point
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Frame:
    """Where hypervolume is measured, in minimisation form: objective f is normalised to (f - ideal) / span,
    the observed front's ideal point mapping to 0 and its nadir to 1. ``ref`` is the outer reference
    point in those units and ``phantoms`` (k x m or None) the points added to every sample's front so
    that, beyond the inner reference point, only a point that extends the front earns credit
    (see ``_reference_points``)."""

    ideal: np.ndarray
    span: np.ndarray
    ref: np.ndarray
    phantoms: np.ndarray | None = None
    floors: np.ndarray | None = None  # m, bool: objectives whose best value looks like a bound (``_floors``)

    @classmethod
    def of(cls, F: np.ndarray, viol: np.ndarray, objectives: Sequence[ObjectiveInfo],
           constraints: Sequence[ConstraintInfo], predicted: np.ndarray | None = None) -> _Frame:
        """The frame of the observed values ``F`` (n x m, minimisation form) with total violations ``viol`` (n)
        and the posterior medians ``predicted`` (p x m) of the likely feasible candidates."""
        feasible = viol <= 0
        observed = F[feasible] if feasible.any() else F
        front = F[pareto_indices(F, viol)]
        ideal, nadir, worst = front.min(axis=0), front.max(axis=0), observed.max(axis=0)
        span = np.where(nadir > ideal, nadir - ideal,
                        np.where(worst > ideal, worst - ideal, np.maximum(np.abs(worst), 1.0)))
        near, far = _reference_points(front, observed, predicted)
        given = _given_reference(objectives, constraints)
        known = np.isfinite(given)
        if known.any() and not (F[feasible][:, known] < given[known]).all(axis=1).any():
            # nothing observed is inside the given box yet: every candidate would gain nothing, and bo could
            # only explore blindly (ZDT2's f2 starts far above 1.1); credit is inferred until one is
            given = np.full_like(given, np.nan)
        near = np.where(np.isfinite(given), given, near)
        far = np.maximum(np.where(np.isfinite(given), given, far), near)
        m = len(ideal)
        grow = near < far
        phantoms = None
        if m > 1 and grow.any():
            P = np.tile(ideal, (m, 1))
            P[np.arange(m), np.arange(m)] = near
            phantoms = (P[grow] - ideal) / span
        return cls(ideal, span, (far - ideal) / span, phantoms, _floors(observed, ideal, span))


def _reference_points(front: np.ndarray, observed: np.ndarray, predicted: np.ndarray | None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The inner and outer reference points (minimisation form, original units) when the user gives none.

    ``front`` is the observed feasible front, ``observed`` every feasible observation, ``predicted`` the
    posterior medians of the likely feasible candidates (what the model believes the space holds).

    - Inner: the observed front's nadir plus a tenth of its range (BoTorch's ``infer_reference_point``).
      Any point better than it in every objective earns credit. Alone it would give nothing beyond the
      front's own range, so a front found at one end of a disconnected one could never grow (ZDT3's first
      piece), nor reach the larger networks of a size range. Further out (Optuna's worst value observed,
      or the nadir of the front the model predicts) it over-pays the ends of the front, and the search
      piles up there (DTLZ2's degenerate corners, the smallest networks).
    - Outer: the worst value observed or predicted, plus a tenth of its distance to the front's best. A
      point beyond the inner reference in some objective earns credit up to here only if it is better
      than every observation in another, that is if it extends the front: phantom points at the inner
      reference on each axis block the rest (``_Frame``), and the extension counts only as far as the
      model's median expects it (``_clamp_extension``).
    """
    ideal, nadir = front.min(axis=0), front.max(axis=0)
    worst = observed.max(axis=0)
    if predicted is not None and len(predicted):
        worst = np.maximum(worst, predicted.max(axis=0))
    return nadir + 0.1 * (nadir - ideal), worst + 0.1 * np.maximum(worst - ideal, 0.0)


@dataclass(frozen=True)
class _CheapScale:
    """Maps cheap quantities (n x c) to GP input columns: log where every fitted value is positive (a parameter
    count spans decades), then the fitted data's range onto [0, 1] (candidates beyond it extrapolate)."""

    logs: np.ndarray
    lo: np.ndarray
    width: np.ndarray

    @classmethod
    def of(cls, C: np.ndarray) -> _CheapScale | None:
        """The scale of the fitted rows' cheap values ``C`` (n x c), None when there are no cheap quantities."""
        C = np.asarray(C, dtype=float)
        if C.size == 0 or C.shape[1] == 0:
            return None
        logs = np.all(C > 0, axis=0)
        Z = np.where(logs, np.log(np.where(logs, C, 1.0)), C)
        lo, hi = Z.min(axis=0), Z.max(axis=0)
        return cls(logs, lo, np.where(hi > lo, hi - lo, 1.0))

    def __call__(self, C: np.ndarray) -> np.ndarray:
        Z = np.where(self.logs, np.log(np.where(self.logs, np.maximum(C, 1e-300), 1.0)), C)
        return np.nan_to_num((Z - self.lo) / self.width, nan=0.5, posinf=10.0, neginf=-10.0)


def _given_reference(objectives: Sequence[ObjectiveInfo], constraints: Sequence[ConstraintInfo]) -> np.ndarray:
    """Per objective (minimisation form), the user's ``ref`` where given, else the worst value its constraints
    accept (the tightest bound on the bad side); NaN where neither is known."""
    out = np.full(len(objectives), np.nan)
    for i, o in enumerate(objectives):
        if o.ref is not None:
            out[i] = o.ref if o.direction == "minimize" else -o.ref
            continue
        for c in constraints:
            bound = c.max if o.direction == "minimize" else (None if c.min is None else -c.min)
            if c.objective == o.name and bound is not None:
                out[i] = bound if np.isnan(out[i]) else min(out[i], bound)
    return out


# ---------------------------------------------------------------------------------------------
# The acquisition: noisy expected hypervolume improvement
# ---------------------------------------------------------------------------------------------
class _NEHVI:
    """NEHVI of candidates for one point of a batch, given a baseline of b points (observed, pending and
    already chosen; unit points ``base_u`` with their exact cheap values ``base_cheap``, b x c) and base
    normal draws ``Z`` (S x more than b): the baseline's joint posterior samples are fixed when this is
    built; a candidate is sampled jointly with them using column ``b`` of ``Z``, the column the point
    takes when it joins the baseline, so its samples stay the same there.

    ``value`` (numpy, no gradient) and ``value_tensor`` (torch, differentiable in the features) give
    mean_s [HVI_s(candidate) x feasible_s(candidate)] x P(success) x penalty.
    """

    def __init__(self, bo: BOStrategy, trial_id: int, surrogates: Surrogates | None, frame: _Frame,
                 base_u: np.ndarray, base_cheap: np.ndarray, Z: torch.Tensor, box: np.ndarray | None,
                 success: Callable[[torch.Tensor], torch.Tensor] | None, penalised: np.ndarray):
        self.bo, self.tid, self.sur, self.frame = bo, trial_id, surrogates, frame
        space = bo.problem.space
        self.success = success
        self.P = None
        if len(penalised):
            self.P = torch.as_tensor(bo._inputs(penalised, bo._cheap(penalised, trial_id)), dtype=torch.float64)
        names = bo._names
        self.model_col = {nm: i for i, nm in enumerate(bo._model_names)}
        self.cheap_col = {nm: i for i, nm in enumerate(bo._cheap_names)}
        self.objectives = [(self.model_col.get(nm), self.cheap_col.get(nm)) for nm in names]
        self.sign = torch.as_tensor(bo._sign, dtype=torch.float64)
        self.ideal = torch.as_tensor(frame.ideal, dtype=torch.float64)
        self.span = torch.as_tensor(frame.span, dtype=torch.float64)
        self.S, b = Z.shape[0], len(base_u)
        self.Zb, self.zc = Z[:, :b], Z[:, b]
        self.Bf = torch.as_tensor(bo._inputs(base_u, base_cheap), dtype=torch.float64)
        self.differentiable = (not bo._cheap_names and box is None and self.sur is not None)
        self.n_space_features = space.n_features
        base = self._baseline_samples()
        C = torch.as_tensor(base_cheap, dtype=torch.float64).reshape(b, len(self.cheap_col))
        Fb, feas = self._objectives(base.permute(2, 1, 0), C[:, None, :].expand(-1, self.S, -1), hard=True)
        Fb = torch.where(torch.isfinite(Fb), Fb, torch.full_like(Fb, _BAD))
        self.region = _regions(Fb.numpy(), feas.numpy() > 0.5, frame.ref, box, frame.phantoms)
        self.volume = float(np.prod(np.maximum(frame.ref, 0.0) + 1.0))

    # -- samples -----------------------------------------------------------------------------------
    def _baseline_samples(self) -> torch.Tensor:
        """The baseline's joint posterior samples (q x S x b, standardised); sets the factor ``LB`` of its
        posterior covariance and ``VB``, which candidates are sampled against (None without GPs)."""
        self.VB = self.LB = None
        if self.sur is None or not len(self.Bf):
            return torch.zeros((len(self.model_col), self.S, len(self.Bf)), dtype=torch.float64)
        with torch.no_grad():
            mu, _, self.VB = self.sur.posterior(self.Bf)
            cov = self.sur.cross_covariance(self.Bf, self.VB, self.Bf, self.VB)
            self.LB = _cholesky(cov + JITTER * torch.eye(len(self.Bf), dtype=torch.float64))
            return mu[:, None, :] + (self.LB @ self.Zb.T).transpose(-1, -2)

    def _objectives(self, Q: torch.Tensor, C: torch.Tensor, hard: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised objectives (n x S x m) and feasibility (n x S) from the modelled quantities' samples
        ``Q`` (n x S x q, standardised) and the exact cheap values ``C`` (n x S x c)."""
        sur = self.sur
        cols = []
        for i, (mc, cc) in enumerate(self.objectives):
            if mc is not None:
                raw = sur.untransform(Q[..., mc], mc)
            else:
                raw = C[..., cc]
            cols.append((self.sign[i] * raw - self.ideal[i]) / self.span[i])
        F = torch.stack(cols, dim=-1)
        feas = torch.ones(F.shape[:2], dtype=torch.float64)
        for c in self.bo.problem.constraints:
            if c.objective in self.cheap_col:
                v = C[..., self.cheap_col[c.objective]]
                ok = torch.ones_like(v, dtype=torch.bool)
                if c.min is not None:
                    ok = ok & (v >= c.min)
                if c.max is not None:
                    ok = ok & (v <= c.max)
                feas = feas * ok.to(torch.float64)
            elif c.objective in self.model_col:
                k = self.model_col[c.objective]
                v = sur.untransform(Q[..., k], k)
                tau = _CONSTRAINT_TEMPERATURE * float(sur.y_std[k])
                if c.min is not None:
                    feas = feas * ((v >= c.min).to(torch.float64) if hard else torch.sigmoid((v - c.min) / tau))
                if c.max is not None:
                    feas = feas * ((v <= c.max).to(torch.float64) if hard else torch.sigmoid((c.max - v) / tau))
        return F, feas

    def _samples(self, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint samples (n x S x q, standardised) of the modelled quantities at features ``A`` (n x d'), and
        their posterior means (n x 1 x q)."""
        sur = self.sur
        mean, var, V = sur.posterior(A)  # q x n
        if self.LB is None:
            s = mean[:, :, None] + var.sqrt()[:, :, None] * self.zc[None, None, :]
            return s.permute(1, 2, 0), mean.T[:, None, :]
        cross = sur.cross_covariance(A, V, self.Bf, self.VB)  # q x n x b
        W = torch.linalg.solve_triangular(self.LB, cross.transpose(-1, -2), upper=False)  # q x b x n
        cond = (var - W.pow(2).sum(1)).clamp_min(1e-12)  # q x n
        s = mean[:, :, None] + W.transpose(-1, -2) @ self.Zb.T + cond.sqrt()[:, :, None] * self.zc[None, None, :]
        return s.permute(1, 2, 0), mean.T[:, None, :]

    # -- values ------------------------------------------------------------------------------------
    def value_tensor(self, A: torch.Tensor, U: np.ndarray | None = None) -> torch.Tensor:
        """The acquisition (n) at GP inputs ``A`` (n x d''); ``U`` (their unit points) is needed for cheap values."""
        n = len(A)
        if self.sur is not None:
            Q, Qm = self._samples(A)
        else:
            Q = Qm = torch.zeros((n, self.S, 0), dtype=torch.float64)
        if self.bo._cheap_names:
            C = torch.as_tensor(self.bo._cheap(U, self.tid), dtype=torch.float64)[:, None, :].expand(-1, self.S, -1)
        else:
            C = torch.zeros((n, self.S, 0), dtype=torch.float64)
        F, feas = self._objectives(Q, C, hard=False)
        F = _clamp_extension(F, self._objectives(Qm, C[:, :1], hard=False)[0], self.frame.floors)
        valid = torch.isfinite(F).all(-1)
        F = torch.where(torch.isfinite(F), F, torch.full_like(F, _BAD))
        v = (self.region.improvement(F) * feas * valid).mean(-1)
        if self.success is not None:
            v = v * self.success(A[:, : self.n_space_features])
        if self.P is not None and self.sur is not None:  # local penalisation: 1 - correlation with each point
            v = v * (1.0 - matern52(A, self.P, self.sur.hyper.lengthscale).max(0).values).prod(-1)
        return v

    def value(self, U: np.ndarray) -> np.ndarray:
        """The acquisition (n) at unit points ``U`` (n x d), without gradients, in blocks."""
        space = self.bo.problem.space
        U = np.asarray(U, dtype=float).reshape(-1, space.dim)
        out = np.zeros(len(U))
        per = max(1, _BLOCK // max(1, self.S * self.region.size))
        with torch.no_grad():
            for start in range(0, len(U), per):
                block = U[start:start + per]
                A = torch.as_tensor(self.bo._inputs(block, self.bo._cheap(block, self.tid)), dtype=torch.float64)
                out[start:start + per] = self.value_tensor(A, block).numpy()
        return out


def _floors(observed: np.ndarray, ideal: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Per objective, whether its best value looks like a bound: two or more observations sit on it (an
    error of 0 or at the validation set's resolution, DTLZ2's objectives at their corners), where
    values below it would be scattered."""
    return (np.abs(observed - ideal) <= 1e-9 * span).sum(axis=0) >= 2


def _clamp_extension(F: torch.Tensor, median: torch.Tensor, floors: np.ndarray | None) -> torch.Tensor:
    """Samples ``F`` (n x S x m, normalised) floored, in the objectives that look bounded (``floors``), where
    they pass the best value observed (0) by more than their median (n x 1 x m) does. Beyond the best
    observed value nothing dominates, so a sample there earns a whole slab; a GP unaware of a bound
    would draw such samples wherever it is unsure, and the search would chase them (DTLZ2's degenerate
    corners). There, extending the front is credited as far as the model's median expects it, not for
    the tail of its uncertainty; elsewhere the tail is what lets a disconnected front grow (ZDT3)."""
    if floors is None or not floors.any():
        return F
    mask = torch.as_tensor(floors)
    return torch.where(mask, torch.maximum(F, median.clamp(max=0.0)), F)


def _regions(F: np.ndarray, feasible: np.ndarray, ref: np.ndarray, box: np.ndarray | None,
             phantoms: np.ndarray | None = None) -> _Region:
    """The improvement region of each sample's front (the feasible baseline points of that sample).

    ``F`` is b x S x m (normalised baseline samples), ``feasible`` b x S, ``ref`` (m) the reference.
    """
    b, S, m = F.shape
    fronts = []
    for s in range(S):
        rows = np.flatnonzero(feasible[:, s] & np.all(F[:, s, :] < ref, axis=1))
        P = F[rows, s, :]
        keep = non_dominated(P) if len(P) else np.zeros(0, dtype=int)
        fronts.append(P[keep] if phantoms is None else np.vstack([P[keep], phantoms]))
    if box is not None:
        return _point_region(fronts, ref, box)
    boxes = [improvement_boxes(P, ref) for P in fronts]
    J = max(len(lo) for lo, _ in boxes)
    lower = np.repeat(ref[None, None, :], S, axis=0).repeat(J, axis=1)
    upper = lower.copy()
    for s, (lo, hi) in enumerate(boxes):
        lower[s, : len(lo)], upper[s, : len(hi)] = lo, hi
    return _Region(lower=torch.as_tensor(lower), upper=torch.as_tensor(upper), size=J)


def _point_region(fronts: list[np.ndarray], ref: np.ndarray, box: np.ndarray) -> _Region:
    """Four or more objectives: uniform points of [lo, ref] not dominated by each sample's front."""
    m = len(ref)
    lo = np.minimum(np.min([P.min(axis=0) if len(P) else ref - 1.0 for P in fronts], axis=0), 0.0) - 1.0
    pts = lo + (ref - lo) * box  # Q x m
    volume = float(np.prod(ref - lo))
    S, Q = len(fronts), len(pts)
    points = np.full((S, Q, m), np.inf)
    for s, P in enumerate(fronts):
        free = ~np.any(np.all(P[:, None, :] <= pts[None, :, :], axis=2), axis=0) if len(P) else np.ones(Q, bool)
        points[s, : free.sum()] = pts[free]
    return _Region(points=torch.as_tensor(points), weight=torch.full((S,), volume / Q, dtype=torch.float64), size=Q)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
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


def _normal_draws(S: int, d: int, rng: np.random.Generator) -> torch.Tensor:
    """S draws (S x d) of a standard normal by scrambled Sobol points pushed through the inverse normal CDF
    (quasi-Monte Carlo, as BoTorch's and Optuna's samplers: a lower variance than plain draws)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # balance wants a power of two; S may not be one
        u = qmc.Sobol(d, scramble=True, seed=rng).random(S)
    return torch.as_tensor(ndtri(np.clip(u, 1e-10, 1.0 - 1e-10)), dtype=torch.float64)


def _u_key(u: np.ndarray) -> int:
    """A stable integer of a unit point, so a local search's draws depend on where it starts."""
    return int(np.round(np.asarray(u) * 1e6).astype(np.int64).sum()) & 0x7FFFFFFF


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
