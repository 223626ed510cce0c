"""Multi-objective BO: a GP per expensive objective, NSGA-II over their LCBs and the exact cheap objectives."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gpytorch
import numpy as np
import torch
from gpytorch.constraints import GreaterThan
from gpytorch.distributions import MultivariateNormal
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.means import ConstantMean
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior, LogNormalPrior
from linear_operator.utils.errors import NanError, NotPSDError
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import Problem as PymooProblem
from pymoo.optimize import minimize

from nago_spec.pareto import hypervolume, pareto_indices, to_minimization
from nago_spec.problem import ConstraintInfo, Problem
from nago_spec.strategies.base import (
    STREAM_FIT,
    STREAM_NSGA,
    STREAM_RANDOM,
    STREAM_SOBOL,
    Strategy,
    Trial,
)

log = logging.getLogger(__name__)

#: numerical failures of a fit or a posterior that make one ask fall back to random proposals
FIT_ERRORS = (NotPSDError, NanError, RuntimeError, ValueError, np.linalg.LinAlgError)

_SQRT2, _SQRT3 = math.sqrt(2.0), math.sqrt(3.0)
_BAD = 1e10  # objective/constraint value given to candidates whose cheap metrics could not be computed


# ---------------------------------------------------------------------------------------------
# Gaussian process surrogate
# ---------------------------------------------------------------------------------------------
class MaternGP(gpytorch.models.ExactGP):
    """Constant mean, ScaleKernel(Matern-5/2 with ARD); priors after BoTorch.

    Lengthscales carry the dimension-scaled LogNormal(sqrt2 + log(d)/2, sqrt3) prior of recent
    BoTorch (Hvarfner et al. 2024), so the prior belief in a smooth function does not fade as d grows.
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, likelihood: GaussianLikelihood):
        super().__init__(X, y, likelihood)
        d = X.shape[-1]
        self.mean_module = ConstantMean()
        self.covar_module = ScaleKernel(
            MaternKernel(
                nu=2.5,
                ard_num_dims=d,
                lengthscale_prior=LogNormalPrior(_SQRT2 + 0.5 * math.log(d), _SQRT3),
                lengthscale_constraint=GreaterThan(2.5e-2),
            ),
            outputscale_prior=GammaPrior(2.0, 0.15),
            outputscale_constraint=GreaterThan(1e-4),
        )

    def forward(self, x: torch.Tensor) -> MultivariateNormal:
        return MultivariateNormal(self.mean_module(x), self.covar_module(x))


@dataclass
class Surrogate:
    """A fitted GP on standardised outputs; ``predict`` answers in the original units."""

    model: MaternGP
    X: torch.Tensor  # N x d' (float64)
    y: torch.Tensor  # N, standardised
    y_mean: float
    y_std: float

    def predict(self, Xf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std (n each) of the latent function at features ``Xf`` (n x d')."""
        if len(Xf) == 0:
            return np.zeros(0), np.zeros(0)
        self.model.eval()
        with torch.no_grad():
            post = self.model(torch.as_tensor(np.asarray(Xf), dtype=torch.float64))
            mean = post.mean.numpy()
            std = post.variance.clamp_min(1e-12).sqrt().numpy()
        return self.y_mean + self.y_std * mean, self.y_std * std

    def condition(self, Xf: np.ndarray) -> Surrogate:
        """The Kriging believer: this GP with ``Xf`` (k x d') added at its own posterior mean, hyperparameters kept."""
        if len(Xf) == 0:
            return self
        mean, _ = self.predict(Xf)
        Xn = torch.cat([self.X, torch.as_tensor(np.asarray(Xf), dtype=torch.float64)])
        yn = torch.cat([self.y, torch.as_tensor((mean - self.y_mean) / self.y_std, dtype=torch.float64)])
        model = copy.deepcopy(self.model)
        model.set_train_data(Xn, yn, strict=False)
        return Surrogate(model, Xn, yn, self.y_mean, self.y_std)


def fit_gp(X: np.ndarray, y: np.ndarray, *, seed: int, restarts: int = 3, iters: int = 60) -> Surrogate:
    """Fit a GP to features ``X`` (N x d') and outputs ``y`` (N) by maximising the marginal likelihood.

    L-BFGS from ``restarts`` seeded initialisations (the first at the prior modes); the restart
    with the lowest loss is kept. Raises the last error when every restart fails.
    """
    y = np.asarray(y, dtype=float)
    if len(y) < 2:
        raise ValueError(f"a GP needs at least 2 observations, got {len(y)}")
    y_mean = float(y.mean())
    y_std = float(y.std())
    if not y_std > 1e-12:
        y_std = 1.0
    Xt = torch.as_tensor(np.asarray(X), dtype=torch.float64)
    yt = torch.as_tensor((y - y_mean) / y_std, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    error: Exception | None = None
    for r in range(max(1, restarts)):
        model = _new_model(Xt, yt)
        _initialise(model, r, rng)
        try:
            loss = _optimise(model, Xt, yt, iters)
        except FIT_ERRORS as exc:
            error = exc
            log.debug("GP restart %d failed: %s", r, exc)
            continue
        if math.isfinite(loss) and (best is None or loss < best[0]):
            best = (loss, copy.deepcopy(model.state_dict()))
    if best is None:
        raise error if error is not None else NanError("GP fit gave no finite marginal likelihood")
    model = _new_model(Xt, yt)
    model.load_state_dict(best[1])
    model.eval()
    return Surrogate(model, Xt, yt, y_mean, y_std)


def _new_model(X: torch.Tensor, y: torch.Tensor) -> MaternGP:
    likelihood = GaussianLikelihood(noise_prior=GammaPrior(1.1, 0.05), noise_constraint=GreaterThan(1e-4))
    return MaternGP(X, y, likelihood).double()


def _initialise(model: MaternGP, restart: int, rng: np.random.Generator) -> None:
    kernel = model.covar_module.base_kernel
    d = kernel.ard_num_dims
    prior = kernel.lengthscale_prior
    mode = math.exp(float(prior.loc) - float(prior.scale) ** 2)
    if restart == 0:
        ls, scale, noise = np.full(d, mode), 1.0, 1e-2
    else:
        ls = mode * np.exp(rng.uniform(-1.0, 2.0, d))
        scale, noise = math.exp(rng.uniform(-1.0, 1.0)), 10 ** rng.uniform(-4.0, -1.0)
    kernel.lengthscale = torch.as_tensor(np.maximum(ls, 0.03), dtype=torch.float64).reshape(1, d)
    model.covar_module.outputscale = torch.tensor(scale, dtype=torch.float64)
    model.likelihood.noise = torch.tensor(max(noise, 1.1e-4), dtype=torch.float64)


def _optimise(model: MaternGP, X: torch.Tensor, y: torch.Tensor, iters: int) -> float:
    """Minimise the negative log marginal likelihood (with priors, per datum); returns its final value."""
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = -mll(model(X), y)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(-mll(model(X), y))


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
    """Everything the optimiser knows of n candidate unit points for one trial id."""

    acq: np.ndarray  # n x m, minimisation: LCB for expensive objectives, exact value for cheap ones
    mean: np.ndarray  # n x m, minimisation: posterior mean for expensive objectives, exact for cheap
    G: np.ndarray  # n x k, pymoo constraints (<= 0 feasible); exact when cheap, posterior mean when modelled
    viol: np.ndarray  # n, total violation (sum of positive parts of G)
    unc: np.ndarray  # n, log volume of the uncertainty box of the expensive objectives (in y_std units)
    valid: np.ndarray  # n, bool: the cheap metrics could be computed


class BOStrategy(Strategy):
    """USeMO-style multi-objective BO with Kriging-believer batches.

    Options: ``beta`` (LCB width, 2), ``pop_size`` (64) and ``generations`` (40) of NSGA-II,
    ``restarts`` (3) and ``fit_iters`` (60) of the GP fit, ``dedup_tol`` (1e-3, feature-space
    distance under which two points count as the same), ``elite_fraction`` (0.25 of the initial
    population are observed Pareto points, as many again are their perturbations).
    """

    default_options = {
        "beta": 2.0,
        "pop_size": 64,
        "generations": 40,
        "restarts": 3,
        "fit_iters": 60,
        "dedup_tol": 1e-3,
        "elite_fraction": 0.25,
    }

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
        objs = problem.objectives
        self._names = [o.name for o in objs]
        self._sign = np.array([-1.0 if o.direction == "maximize" else 1.0 for o in objs])
        self._cheap_cache: dict[tuple[int, tuple[Any, ...]], np.ndarray] = {}
        self._cheap_names: list[str] = [o.name for o in objs if o.cheap]
        self._model_names: list[str] = [o.name for o in objs if not o.cheap]
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

    # -- model-based proposals -----------------------------------------------------------------
    def _propose(
        self, slot_ids: list[int], history: list[Trial], complete: list[Trial], pending: list[Trial]
    ) -> np.ndarray:
        """Unit points (len(slot_ids) x d) chosen from NSGA-II's final population by hypervolume improvement."""
        space, opts = self.problem.space, self.options
        objs = self.problem.objectives
        model_names = self._model_names

        # one GP per modelled quantity, fitted on the complete trials that report it; failed trials never enter
        surrogates: list[Surrogate] = []
        for qi, name in enumerate(model_names):
            rows = [t for t in complete if name in t.values]
            X = space.features(np.array([t.u for t in rows]).reshape(-1, space.dim))
            y = np.array([t.values[name] for t in rows])
            surrogates.append(
                fit_gp(X, y, seed=self.child_seed(STREAM_FIT, slot_ids[0], qi), restarts=int(opts["restarts"]),
                       iters=int(opts["fit_iters"]))
            )
        # Kriging believer: pending trials enter every GP at its own posterior mean
        Xpend = space.features(np.array([t.u for t in pending]).reshape(-1, space.dim))
        surrogates = [s.condition(Xpend) for s in surrogates]

        # the observed front (minimisation form) and its normalisation box
        F_obs = to_minimization([t.values for t in complete], objs)
        viol_obs = np.array([self.problem.violation(t.values) for t in complete])
        feasible = viol_obs <= 0
        pool = F_obs[feasible] if feasible.any() else F_obs
        ideal, worst = pool.min(axis=0), pool.max(axis=0)
        span = np.where(worst > ideal, worst - ideal, np.maximum(np.abs(worst), 1.0))
        ref = np.full(len(objs), 1.1)

        def norm(F: np.ndarray) -> np.ndarray:
            return (np.asarray(F).reshape(-1, len(objs)) - ideal) / span

        front = [row for row in F_obs[feasible]]
        for t in pending:
            s = self._scores(t.u[None], t.id, surrogates)
            if s.valid[0] and s.viol[0] <= 0:
                front.append(s.mean[0])

        # NSGA-II over the acquisition, for the first slot's trial id
        cand = self._nsga(slot_ids[0], surrogates, complete, F_obs, viol_obs)

        taken = [space.features(np.array([t.u for t in history + pending]).reshape(-1, space.dim))]
        Fc = space.features(cand)
        out = np.zeros((len(slot_ids), space.dim))
        tol = float(opts["dedup_tol"])
        for j, tid in enumerate(slot_ids):
            s = self._scores(cand, tid, surrogates)
            T = np.vstack(taken)
            dmin = _min_dist(Fc, T)
            ok = s.valid & (dmin > tol)
            if not ok.any():
                log.info("no new candidate for trial %d among NSGA-II's population; proposing a random point", tid)
                u = self._random_point(tid, T)
            else:
                i = self._select(s, ok, norm(np.array(front)), norm, ref, dmin)
                u = cand[i]
            out[j] = u
            fu = space.features(u[None])
            taken.append(fu)
            s_u = self._scores(u[None], tid, surrogates)
            if s_u.valid[0] and s_u.viol[0] <= 0:
                front.append(s_u.mean[0])
            surrogates = [sg.condition(fu) for sg in surrogates]
        return out

    def _select(
        self,
        s: _Scores,
        ok: np.ndarray,
        R: np.ndarray,
        norm: Callable[[np.ndarray], np.ndarray],
        ref: np.ndarray,
        dmin: np.ndarray,
    ) -> int:
        """The candidate to take: the largest hypervolume improvement over ``R`` (normalised front,
        r x m) among the feasible ones, else the most uncertain (USeMO), else the least violating."""
        feas = ok & (s.viol <= 0)
        if not feas.any():
            best = s.viol[ok].min()
            feas = ok & (s.viol <= best + 1e-12 * max(1.0, abs(best)))
        idx = np.flatnonzero(feas)
        hv0 = hypervolume(R, ref) if len(R) else 0.0
        A = norm(s.acq[idx])
        hvi = np.array([hypervolume(np.vstack([R, a[None]]) if len(R) else a[None], ref) - hv0 for a in A])
        if hvi.max() > 1e-9:
            return int(idx[int(np.argmax(hvi))])
        if self._model_names and np.isfinite(s.unc[idx]).any():
            return int(idx[int(np.argmax(s.unc[idx]))])
        return int(idx[int(np.argmax(dmin[idx]))])

    def _nsga(
        self, trial_id: int, surrogates: list[Surrogate], complete: list[Trial], F_obs: np.ndarray, viol_obs: np.ndarray
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
            return sc.acq, sc.G

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

    def _scores(self, U: np.ndarray, trial_id: int, surrogates: list[Surrogate]) -> _Scores:
        """Acquisition, means, constraints and uncertainty of unit points ``U`` (n x d) for ``trial_id``."""
        space, beta = self.problem.space, float(self.options["beta"])
        U = np.asarray(U, dtype=float).reshape(-1, space.dim)
        n = len(U)
        C = self._cheap(U, trial_id)
        valid = np.isfinite(C).all(axis=1)
        Xf = space.features(U)
        mu = np.zeros((n, len(surrogates)))
        sd = np.zeros((n, len(surrogates)))
        unc = np.zeros(n)
        for q, sg in enumerate(surrogates):
            mu[:, q], sd[:, q] = sg.predict(Xf)
            if self._model_names[q] in self._names:
                unc += np.log(np.maximum(sd[:, q] / sg.y_std, 1e-300))
        value = {nm: C[:, i] for i, nm in enumerate(self._cheap_names)}
        lower = {nm: mu[:, q] - beta * sd[:, q] for q, nm in enumerate(self._model_names)}
        upper = {nm: mu[:, q] + beta * sd[:, q] for q, nm in enumerate(self._model_names)}
        mean = {nm: mu[:, q] for q, nm in enumerate(self._model_names)}
        acq = np.zeros((n, len(self._names)))
        F_mean = np.zeros((n, len(self._names)))
        for i, nm in enumerate(self._names):
            if nm in value:
                acq[:, i] = F_mean[:, i] = self._sign[i] * value[nm]
            else:
                # the optimistic bound in minimisation form: mean - beta*std after the sign flip
                acq[:, i] = self._sign[i] * (lower[nm] if self._sign[i] > 0 else upper[nm])
                F_mean[:, i] = self._sign[i] * mean[nm]
        G = np.column_stack(
            [_signed_violation(c, value.get(c.objective, mean.get(c.objective)), n) for c in self.problem.constraints]
        ) if self.problem.constraints else np.zeros((n, 0))
        acq[~valid], F_mean[~valid], G[~valid] = _BAD, _BAD, _BAD
        viol = np.maximum(G, 0.0).sum(axis=1)
        return _Scores(acq, F_mean, G, viol, unc, valid)

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
