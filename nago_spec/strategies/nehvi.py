"""The acquisition of the bo strategy (nago_spec.strategies.bo): the noisy expected hypervolume
improvement of candidate points over the posterior samples of their GPs (qNEHVI's idea), times their
probability of feasibility; its reference points, improvement regions and frames of observations."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.special import ndtri
from scipy.stats import qmc

from nago_spec.pareto import improvement_boxes, non_dominated, pareto_indices
from nago_spec.problem import ConstraintInfo, ObjectiveInfo
from nago_spec.strategies.gp import JITTER, Surrogates, _cholesky, matern52

if TYPE_CHECKING:
    from nago_spec.strategies.bo import BOStrategy

_BAD = 1e10  # objective/constraint value given to candidates whose cheap metrics could not be computed
#: width, in units of a quantity's standard deviation, of the sigmoid that smooths a modelled constraint
_CONSTRAINT_TEMPERATURE = 1e-3
#: candidates x samples x boxes evaluated together (16 MB of doubles per objective)
_BLOCK = 1 << 21


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


@dataclass
class _Scalarised:
    """The improvement of a random augmented Chebyshev scalarisation (ParEGO's, qNParEGO's noisy form), per
    posterior sample: a point y is worth u(y) = min_i w_i d_i + alpha sum_i w_i d_i, d_i = (ref_i - y_i) / ref_i
    its distance from the reference point in units where the ideal point is at distance 1, and improves
    sample s by max(0, u(y) - ``best`` s), ``best`` the best utility of that sample's feasible baseline
    (0 at the reference point, so nothing beyond it earns credit). Distances are measured from a
    reference point, not towards an ideal one, so a point that extends the front (a network more
    accurate than any observed and larger) gains where its weights ask for it."""

    weights: torch.Tensor  # m
    ref: torch.Tensor  # m, normalised: the outer reference point in cheap objectives, the inner in modelled ones
    best: torch.Tensor  # S
    size: int = 1
    ALPHA = 0.05  # the augmentation (Knowles 2006, BoTorch's get_chebyshev_scalarization)

    @classmethod
    def of(cls, F: np.ndarray, feasible: np.ndarray, ref: np.ndarray, weights: np.ndarray) -> _Scalarised:
        """The scalarisation of the baseline samples ``F`` (b x S x m, normalised) with feasibility ``feasible``
        (b x S), reference ``ref`` (m) and ``weights`` (m, on the simplex)."""
        out = cls(torch.as_tensor(weights, dtype=torch.float64), torch.as_tensor(ref, dtype=torch.float64),
                  torch.zeros(F.shape[1], dtype=torch.float64))
        if F.shape[0]:
            u = out.utility(torch.as_tensor(F, dtype=torch.float64))  # b x S
            u = torch.where(torch.as_tensor(feasible) & (torch.as_tensor(F) <= out.ref).all(-1), u, torch.zeros_like(u))
            out.best = u.max(0).values.clamp_min(0.0)
        return out

    def utility(self, Y: torch.Tensor) -> torch.Tensor:
        d = self.weights * (self.ref - Y) / self.ref.clamp_min(1e-9)
        return d.min(-1).values + self.ALPHA * d.sum(-1)

    def improvement(self, Y: torch.Tensor) -> torch.Tensor:
        """Improvement (n x S) of the points ``Y`` (n x S x m), each alone, sample by sample."""
        inside = (Y <= self.ref).all(-1)
        return torch.where(inside, (self.utility(Y) - self.best[None]).clamp_min(0.0), torch.zeros_like(Y[..., 0]))


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
    inner: np.ndarray | None = None  # m: the inner reference point (None: ``ref``)

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
        return cls(ideal, span, (far - ideal) / span, phantoms, _floors(observed, ideal, span), (near - ideal) / span)


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
    mean_s [HVI_s(candidate) x feasible_s(candidate)] x P(success) x penalty. With ``weights`` (m, on the
    simplex), the improvement of a Chebyshev scalarisation with those weights replaces the hypervolume's
    (``_Scalarised``): the noisy expected improvement of qNParEGO.
    """

    def __init__(self, bo: BOStrategy, trial_id: int, surrogates: Surrogates | None, frame: _Frame,
                 base_u: np.ndarray, base_cheap: np.ndarray, Z: torch.Tensor, box: np.ndarray | None,
                 success: Callable[[torch.Tensor], torch.Tensor] | None, penalised: np.ndarray,
                 weights: np.ndarray | None = None):
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
        self.region: _Region | _Scalarised
        if weights is None:
            self.region = _regions(Fb.numpy(), feas.numpy() > 0.5, frame.ref, box, frame.phantoms)
        else:
            # measured from the outer reference in the cheap objectives (their trade is exact: a larger
            # network's cost is known) and from the inner one in the modelled ones, where beyond the front's
            # nadir lies only the model's uncertainty (the outer box would reward the tail, as _Frame says)
            cheap = np.array([cc is not None for _, cc in self.objectives])
            inner = frame.ref if frame.inner is None else frame.inner
            self.region = _Scalarised.of(Fb.numpy(), feas.numpy() > 0.5, np.where(cheap, frame.ref, inner), weights)
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
