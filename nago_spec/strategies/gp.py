"""GP surrogates for the bo strategy: one exact Matérn-5/2 ARD GP per modelled quantity, fitted together.

All quantities share the training inputs, so their GPs live in one batched gpytorch model (batch
dimension = quantity) and all restarts of all quantities are optimised in one L-BFGS run: the
Python overhead of gpytorch is paid once per step, not once per GP and restart.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import gpytorch
import numpy as np
import torch
from gpytorch.constraints import GreaterThan
from gpytorch.distributions import MultivariateNormal
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.likelihoods import FixedNoiseGaussianLikelihood, GaussianLikelihood
from gpytorch.means import ConstantMean
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior, LogNormalPrior
from linear_operator.utils.errors import NanError, NotPSDError

log = logging.getLogger(__name__)

#: numerical failures of a fit or a posterior that make one ask fall back to random proposals
FIT_ERRORS = (NotPSDError, NanError, RuntimeError, ValueError, np.linalg.LinAlgError)

_SQRT2, _SQRT3 = math.sqrt(2.0), math.sqrt(3.0)
#: floor of the learned noise variance, in standardised units (outputs are standardised to unit variance)
MIN_NOISE = 1e-4
#: floor of a known noise variance (gpytorch rounds smaller ones up, with a warning)
_NOISE_FLOOR = 1e-6


class BatchGP(gpytorch.models.ExactGP):
    """b independent GPs on shared inputs: constant mean, ScaleKernel(Matérn-5/2 with ARD); priors after BoTorch.

    Lengthscales carry the dimension-scaled LogNormal(sqrt2 + log(d)/2, sqrt3) prior of recent BoTorch
    (Hvarfner et al. 2024), so the prior belief in a smooth function does not fade as d grows. Inputs
    ``X`` are ``b x n x d`` (unit cube features), targets ``y`` ``b x n`` (standardised).
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, likelihood: gpytorch.likelihoods.Likelihood):
        super().__init__(X, y, likelihood)
        b, d = torch.Size([X.shape[0]]), X.shape[-1]
        self.mean_module = ConstantMean(batch_shape=b)
        self.covar_module = ScaleKernel(
            MaternKernel(
                nu=2.5,
                ard_num_dims=d,
                batch_shape=b,
                lengthscale_prior=LogNormalPrior(_SQRT2 + 0.5 * math.log(d), _SQRT3),
                lengthscale_constraint=GreaterThan(2.5e-2),
            ),
            batch_shape=b,
            outputscale_prior=GammaPrior(2.0, 0.15),
            outputscale_constraint=GreaterThan(1e-4),
        )

    def forward(self, x: torch.Tensor) -> MultivariateNormal:
        return MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _likelihood(b: int, noise: torch.Tensor | None) -> gpytorch.likelihoods.Likelihood:
    """Homoscedastic learned noise; with known per-point ``noise`` (b x n, heteroscedastic) that noise
    plus a learned homoscedastic floor."""
    kw = {"noise_prior": GammaPrior(1.1, 0.05), "noise_constraint": GreaterThan(MIN_NOISE)}
    if noise is None:
        return GaussianLikelihood(batch_shape=torch.Size([b]), **kw)
    return FixedNoiseGaussianLikelihood(noise, learn_additional_noise=True, batch_shape=torch.Size([b]), **kw)


@dataclass
class Surrogates:
    """Fitted GPs of m quantities on N shared inputs; ``predict`` answers in the original units.

    ``X`` is N x d' (features), ``Y`` N x m (original units), ``noise`` N x m variances of the
    observations in original units (None: homoscedastic, learned).
    """

    model: BatchGP
    X: torch.Tensor
    y: torch.Tensor  # m x N, standardised
    y_mean: np.ndarray  # m
    y_std: np.ndarray  # m
    noise: torch.Tensor | None  # m x N, standardised units

    @property
    def m(self) -> int:
        return len(self.y_mean)

    def predict(self, Xf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std (each n x m) of the latent functions at features ``Xf`` (n x d')."""
        n = len(Xf)
        if n == 0:
            return np.zeros((0, self.m)), np.zeros((0, self.m))
        self.model.eval()
        x = torch.as_tensor(np.asarray(Xf), dtype=torch.float64).expand(self.m, n, -1)
        with torch.no_grad(), gpytorch.settings.debug(False):  # debug warns when x equals the training inputs
            post = self.model(x)
            mean = post.mean.numpy().T
            std = post.variance.clamp_min(1e-12).sqrt().numpy().T
        return self.y_mean + self.y_std * mean, self.y_std * std

    def with_data(self, X: np.ndarray, Y: np.ndarray, noise: np.ndarray | None = None) -> Surrogates:
        """These GPs' hyperparameters conditioned on other data: ``X`` (N x d'), ``Y`` (N x m), ``noise``
        (N x m variances or None, as in fit_gps), standardised afresh."""
        Xt, ys, y_mean, y_std, nt = _prepare(X, Y, noise)
        if (nt is None) != (self.noise is None):
            raise ValueError("with_data: known noise must be given exactly when the fit had it")
        model = BatchGP(Xt.expand(self.m, -1, -1), ys, _likelihood(self.m, nt)).double()
        state = {k: v for k, v in self.model.state_dict().items() if not k.startswith("likelihood.noise_covar.")
                 or nt is None}
        model.load_state_dict(state, strict=False)
        model.eval()
        return Surrogates(model, Xt, ys, y_mean, y_std, nt)

    def correlation(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        """Prior correlation (m x n x p) between features ``A`` (n x d') and ``B`` (p x d') under each GP's kernel."""
        kernel = self.model.covar_module.base_kernel
        a = torch.as_tensor(np.asarray(A), dtype=torch.float64).expand(self.m, -1, -1)
        b = torch.as_tensor(np.asarray(B), dtype=torch.float64).expand(self.m, -1, -1)
        with torch.no_grad():
            return kernel(a, b).to_dense().numpy()

    def lengthscales(self) -> np.ndarray:
        """The fitted lengthscales, m x d'."""
        return self.model.covar_module.base_kernel.lengthscale.detach().numpy().reshape(self.m, -1)

    def condition(self, Xf: np.ndarray) -> Surrogates:
        """The Kriging believer: these GPs with ``Xf`` (k x d') observed at their own posterior mean
        (noise-free), hyperparameters kept."""
        if len(Xf) == 0:
            return self
        mean, _ = self.predict(Xf)
        k = len(Xf)
        Xn = torch.cat([self.X, torch.as_tensor(np.asarray(Xf), dtype=torch.float64)])
        yn = torch.cat([self.y, torch.as_tensor(((mean - self.y_mean) / self.y_std).T, dtype=torch.float64)], dim=1)
        model = copy.deepcopy(self.model)
        noise = None
        if self.noise is not None:
            noise = torch.cat([self.noise, torch.full((self.m, k), MIN_NOISE, dtype=torch.float64)], dim=1)
            model.likelihood.noise = noise
        model.set_train_data(Xn.expand(self.m, -1, -1), yn, strict=False)
        return Surrogates(model, Xn, yn, self.y_mean, self.y_std, noise)


def fit_gps(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    noise: np.ndarray | None = None,
    seed: int,
    restarts: int = 3,
    iters: int = 60,
) -> Surrogates:
    """Fit one GP per column of ``Y`` (N x m) on features ``X`` (N x d') by maximising the marginal likelihood.

    ``noise`` (N x m) holds known observation variances (the spread of several samples of a point);
    NaN or None means unknown. Outputs are standardised per column. All ``restarts`` of all columns
    run as one batched L-BFGS; restart 0 starts at the prior modes, the others at seeded random
    points. For each column the restart with the lowest loss is kept. Raises when every restart of
    a column fails.
    """
    Xt, ys, y_mean, y_std, nm = _prepare(X, Y, noise)
    m, N = ys.shape
    if N < 2:
        raise ValueError(f"a GP needs at least 2 observations, got {N}")
    R = max(1, int(restarts))
    yt = ys.repeat(R, 1)  # (R*m) x N, restart-major
    nt = None if nm is None else nm.repeat(R, 1)
    model = BatchGP(Xt.expand(R * m, -1, -1), yt, _likelihood(R * m, nt)).double()
    _initialise(model, R, m, np.random.default_rng(seed))
    try:
        losses = _optimise(model, iters).reshape(R, m)
    except FIT_ERRORS as exc:
        if R == 1:
            raise
        # one diverging restart poisons the summed loss of all: start over from the prior modes alone
        log.debug("batched GP fit failed (%s); refitting from the prior modes only", exc)
        return fit_gps(X, Y, noise=noise, seed=seed, restarts=1, iters=iters)
    best = np.full(m, -1)
    for q in range(m):
        finite = np.flatnonzero(np.isfinite(losses[:, q]))
        if len(finite) == 0:
            raise NanError(f"GP fit of output {q} gave no finite marginal likelihood in {R} restarts")
        best[q] = finite[np.argmin(losses[finite, q])]
    index = torch.as_tensor(best * m + np.arange(m))
    state = {k: (v.index_select(0, index) if v.dim() and v.shape[0] == R * m else v)
             for k, v in model.state_dict().items()}
    final = BatchGP(Xt.expand(m, -1, -1), ys, _likelihood(m, nm)).double()
    final.load_state_dict(state)
    final.eval()
    return Surrogates(final, Xt, ys, y_mean, y_std, nm)


def _prepare(X: np.ndarray, Y: np.ndarray, noise: np.ndarray | None) -> tuple[
        torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, torch.Tensor | None]:
    """Features (N x d'), standardised targets (m x N), their means and stds (m), and the known noise
    in standardised units (m x N; unknown entries 0, None when nothing is known)."""
    Y = np.asarray(Y, dtype=float).reshape(len(X), -1)
    y_mean = Y.mean(axis=0)
    y_std = Y.std(axis=0)
    y_std = np.where(y_std > 1e-12, y_std, 1.0)
    ys = torch.as_tensor(((Y - y_mean) / y_std).T.copy(), dtype=torch.float64)
    nt = None
    if noise is not None and np.isfinite(np.asarray(noise, dtype=float)).any():
        nz = np.nan_to_num(np.asarray(noise, dtype=float).reshape(Y.shape), nan=0.0) / y_std**2
        nt = torch.as_tensor(np.maximum(nz.T, _NOISE_FLOOR).copy(), dtype=torch.float64)
    return torch.as_tensor(np.asarray(X), dtype=torch.float64), ys, y_mean, y_std, nt


def _initialise(model: BatchGP, restarts: int, m: int, rng: np.random.Generator) -> None:
    """Restart 0 of every output at the prior modes; the others log-uniformly around them."""
    kernel = model.covar_module.base_kernel
    d = kernel.ard_num_dims
    prior = kernel.lengthscale_prior
    mode = math.exp(float(prior.loc) - float(prior.scale) ** 2)
    b = restarts * m
    ls = np.full((b, d), mode)
    scale, noise = np.ones(b), np.full(b, 1e-2)
    ls[m:] = mode * np.exp(rng.uniform(-1.0, 2.0, (b - m, d)))
    scale[m:] = np.exp(rng.uniform(-1.0, 1.0, b - m))
    noise[m:] = 10 ** rng.uniform(-4.0, -1.0, b - m)
    kernel.lengthscale = torch.as_tensor(np.maximum(ls, 0.03), dtype=torch.float64).reshape(b, 1, d)
    model.covar_module.outputscale = torch.as_tensor(scale, dtype=torch.float64)
    lik = model.likelihood
    target = lik.second_noise_covar if isinstance(lik, FixedNoiseGaussianLikelihood) else lik.noise_covar
    target.noise = torch.as_tensor(np.maximum(noise, 1.1 * MIN_NOISE), dtype=torch.float64).reshape(b, 1)


def _optimise(model: BatchGP, iters: int) -> np.ndarray:
    """Minimise the sum over the batch of the negative log marginal likelihoods (with priors, per datum).

    Returns each batch member's final loss (NaN where it is not finite); raises FIT_ERRORS.
    """
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    X, y = model.train_inputs[0], model.train_targets
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = -mll(model(X), y).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        out = (-mll(model(X), y)).numpy()
    return np.where(np.isfinite(out), out, np.nan)
