"""Multi-objective BO: GPs for the expensive objectives and constraints, cheap objectives computed exactly, and
each point chosen by a noisy expected hypervolume improvement (qNEHVI's idea) times its probability of success."""

from __future__ import annotations

import logging
import numbers
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import Problem as PymooProblem
from pymoo.optimize import minimize
from scipy.optimize import minimize as scipy_minimize
from scipy.stats import qmc

from nago_spec.pareto import pareto_indices, to_minimization
from nago_spec.problem import Problem
from nago_spec.space import FloatParam
from nago_spec.strategies.base import (
    STREAM_FIT,
    STREAM_NSGA,
    STREAM_RANDOM,
    STREAM_SOBOL,
    Strategy,
    Trial,
)
from nago_spec.strategies.gp import FIT_ERRORS, Surrogates, fit_gps
from nago_spec.strategies.nehvi import (
    _BAD,
    _CheapScale,
    _Frame,
    _min_dist,
    _NEHVI,
    _normal_draws,
    _signed_violation,
    _snap_to_bounds,
    _u_key,
    refit_point,
)

log = logging.getLogger(__name__)

#: stream of the Monte-Carlo base samples (normal draws of the joint posterior, uniform draws of the box)
STREAM_MC = 6
#: stream of the raw candidates (Sobol points and perturbations of the front)
STREAM_RAW = 7
#: stream of the scalarised trials' weights
STREAM_WEIGHTS = 8


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
    - **Scalarised points.** Hypervolume pays most for filling the front's widest gaps, which on a
      (error, parameters) front are among the small networks; the accurate end, where each step costs
      many parameters, is rarely the largest gain. So, where an objective is cheap (exact, as a network's
      parameter count, whose small end is a certain gain), one trial in ``scalarise_every`` is instead chosen
      by the noisy expected improvement of an augmented Chebyshev scalarisation (qNParEGO, Daulton et
      al. 2020) with weights stratified over the simplex from trial to trial (a scrambled Sobol
      sequence): every part of the front, its ends included, gets proposals in proportion to its share
      of the weights (``_Scalarised``).
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
    - ``scalarise_every`` (None: 3 where some objective is cheap, else 0): trial ids k with k mod this =
      this - 1 take a scalarised point (see above); 0 never (nor with ``batch_rule = "usemo"``, nor with
      one objective). Measured (docs/RESULTS.md, sections 1 and 6): on the (error, params) front of a
      NAS search the scalarised trials moved the most accurate network from 0.294 to 0.283 mean test
      error without costing hypervolume; on the black-box problems, where no objective is known exactly
      and the hypervolume has no certain gains to prefer, they cost it (ZDT3 at batch 4 1.305 to 1.148,
      DTLZ7 at batch 1 2.49 to 2.19), so the default keeps them to spaces with a cheap objective.
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
        "scalarise_every": None,
    }
    BATCH_RULES = ("joint", "believer", "penalise", "usemo")
    #: candidates refined per point of a batch
    REFINE_STARTS = 1
    #: ``scalarise_every`` where an objective is cheap and the option is not given
    SCALARISE_EVERY = 3

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
        every = self.options["scalarise_every"]
        if every is None:
            every = self.SCALARISE_EVERY if any(o.cheap for o in objs) else 0
        elif (isinstance(every, bool) or not isinstance(every, numbers.Real) or not float(every).is_integer()
              or every < 0):
            raise ValueError(f"scalarise_every = {every}: must be 0 (never) or a positive whole number of trials")
        self._scalarise_every = int(every)
        self._names = [o.name for o in objs]
        self._sign = np.array([-1.0 if o.direction == "maximize" else 1.0 for o in objs])
        self._cheap_cache: dict[tuple[int, tuple[Any, ...]], np.ndarray] = {}
        self._cheap_names: list[str] = [o.name for o in objs if o.cheap]
        self._model_names: list[str] = [o.name for o in objs if not o.cheap]
        self._fit: tuple[tuple[Any, ...], Surrogates, _CheapScale | None] | None = None  # the last fit, its key
        self._scale: _CheapScale | None = None  # how the GP inputs scale the cheap quantities
        self._fail_fit: tuple[tuple[Any, ...], Surrogates] | None = None  # the failure classifier and its key

    # -- the hook ------------------------------------------------------------------------------
    def _ask(self, n: int, next_trial_id: int, history: list[Trial], pending: list[Trial]) -> np.ndarray:
        space = self.problem.space
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
            why = f"the BO proposal failed ({type(exc).__name__}: {exc}); a random point instead"
            self.fallbacks = dict.fromkeys(slot_ids, why)
            log.warning("trials %s: %s", slot_ids, why)
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

        def choose(tid: int, T: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
            acq = _NEHVI(self, tid, surrogates, frame, np.array(base_u).reshape(-1, space.dim),
                         np.array(base_cheap).reshape(len(base_u), -1), Z, box, success,
                         np.array(penalised).reshape(-1, space.dim), weights)

            def value(U: np.ndarray, acq: _NEHVI = acq, T: np.ndarray = T) -> np.ndarray:
                v = acq.value(U)
                return np.where(_min_dist(feat(U), T) > tol, v, -np.inf)

            v = value(cand)
            ok = np.isfinite(v)
            if not ok.any():
                log.info("no new candidate for trial %d; proposing a random point", tid)
                return self._random_point(tid, T)
            if rule == "usemo" or v[ok].max() <= 1e-12 * max(1.0, acq.volume):
                return cand[self._least_known(cand, tid, surrogates, ok, rule)]
            return self._refine(cand, v, value, acq, tid)

        for j, tid in enumerate(slot_ids):
            T = np.vstack(taken)
            weights = self.scalarisation(tid)
            u = choose(tid, T, weights)
            if weights is not None and success is not None and self._p_success(success, u) < 0.5:
                # a weight's direction may lead only into a region where trials fail, and the scalarised
                # improvement has nowhere else to go, while the hypervolume still has gaps elsewhere
                log.debug("trial %d: the scalarised point would likely fail; choosing by hypervolume", tid)
                u = choose(tid, T, None)
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

    def _p_success(self, success: Callable[[torch.Tensor], torch.Tensor], u: np.ndarray) -> float:
        """The failure classifier's probability of success at unit point ``u``."""
        A = torch.as_tensor(self.problem.space.features(np.asarray(u).reshape(1, -1)), dtype=torch.float64)
        with torch.no_grad():
            return float(success(A)[0])

    def scalarisation(self, trial_id: int) -> np.ndarray | None:
        """The Chebyshev weights (m, on the simplex) of trial ``trial_id`` where it takes a scalarised point,
        else None: the (k // every)-th point of a scrambled Sobol sequence in m - 1 dimensions, mapped to
        the simplex by its sorted spacings, so consecutive scalarised trials spread their weights."""
        every, m = self._scalarise_every, len(self._names)
        if every <= 0 or m < 2 or self.options["batch_rule"] == "usemo" or trial_id % every != every - 1:
            return None
        j = trial_id // every
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # balance wants a power of two
            u = qmc.Sobol(m - 1, scramble=True, seed=self.child_seed(STREAM_WEIGHTS)).random(j + 1)[j]
        return np.diff(np.concatenate([[0.0], np.sort(u), [1.0]]))

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
