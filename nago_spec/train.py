"""Train and evaluate one network on an in-memory Dataset: SGD + Nesterov, cosine schedule, CPU hot loop.

Thread counts are the process owner's business: a NAS worker is expected to run with
``torch.set_num_threads(1)`` (one worker per core), and nothing here changes it.
Batches are index slices of the in-memory uint8 tensors (no DataLoader, no worker processes).
channels_last was measured and is not used: 15-25 % faster on a plain CNN, but from 4 % faster to
16 % slower on sampled NAGO networks, whose many small merges and pools dominate.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nago_spec.data import Dataset
from nago_spec.errors import TrialError

_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class TrainResult:
    """What one training run measured.

    ``val_accuracy`` in [0, 1] and ``val_loss`` (mean cross-entropy) on the validation split after
    training; ``train_loss`` the mean training loss over the last epoch's worth of steps; ``epochs``
    the epochs actually done (fractional: fewer than asked when ``max_seconds`` stopped it);
    ``seconds`` the wall time of the whole call (training and validation); ``images_per_second``
    the training throughput (forward + backward + update, 1 process, the caller's thread count).
    """

    val_accuracy: float
    val_loss: float
    train_loss: float
    epochs: float
    steps: int
    seconds: float
    images_per_second: float


@dataclass(frozen=True)
class Augment:
    """Augmentation of raw training batches on the tensors (no PIL, no worker processes).

    ``crop_padding``: each image is zero-padded by this many pixels on every side and a random
    crop of the original size taken (RandomCrop(padding=p)); ``flip``: mirrored left-right with
    probability 1/2; ``cutout``: a ``cutout x cutout`` square at a uniformly random centre (clipped at
    the border) is set to ``fill``, the per-channel mean in raw pixels, so it becomes 0 after the
    model's normalisation, as in DeVries & Taylor's Cutout.
    """

    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0
    fill: tuple[float, ...] = (0.0,)

    def __bool__(self) -> bool:
        return self.crop_padding > 0 or self.flip or self.cutout > 0

    def __call__(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """Augmented float32 copy of the raw batch ``x`` (``N x C x H x W``), random draws from ``gen``."""
        x = x.float()
        n, c, h, w = x.shape
        if self.crop_padding > 0:
            p = self.crop_padding
            padded = F.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (n, 1, 1, 1), generator=gen)
            dx = torch.randint(0, 2 * p + 1, (n, 1, 1, 1), generator=gen)
            rows = (dy + torch.arange(h).view(1, 1, h, 1)).expand(n, c, h, w + 2 * p)
            cols = (dx + torch.arange(w).view(1, 1, 1, w)).expand(n, c, h, w)
            x = padded.gather(2, rows).gather(3, cols)
        if self.flip:
            mirror = torch.rand(n, generator=gen) < 0.5
            x = torch.where(mirror.view(n, 1, 1, 1), x.flip(3), x)
        if self.cutout > 0:
            half = self.cutout // 2
            cy = torch.randint(0, h, (n, 1, 1, 1), generator=gen)
            cx = torch.randint(0, w, (n, 1, 1, 1), generator=gen)
            r, q = torch.arange(h).view(1, 1, h, 1), torch.arange(w).view(1, 1, 1, w)
            hole = (r >= cy - half) & (r < cy - half + self.cutout) & (q >= cx - half) & (q < cx - half + self.cutout)
            fill = torch.tensor(self.fill, dtype=x.dtype).view(1, -1, 1, 1).expand(1, c, 1, 1)
            x = torch.where(hole, fill, x)
        return x


def train(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: float,
    batch_size: int,
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 5e-4,
    seed: int,
    max_seconds: float | None = None,
    augment: Augment | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data.x_train`` and score it on ``data.x_val``.

    ``model`` maps raw pixels, float32 ``N x C x H x W`` in [0, 255], to logits ``N x classes``
    (it normalises itself). An epoch is ``max(1, N // batch_size)`` steps over a fresh permutation
    drawn from ``torch.Generator().manual_seed(seed)`` (the last partial batch is dropped, so no
    step sees a batch of one); ``ceil(epochs * steps_per_epoch)`` steps in all, with the learning
    rate on a per-step cosine from ``lr`` towards 0. Weight decay applies to conv and linear weights
    only. The global RNG (dropout) is reseeded from ``seed`` inside ``fork_rng``, so the same
    weights and seed give identical results and the caller's RNG state is untouched.
    ``max_seconds`` stops training after the step that crosses it. ``augment`` transforms each
    training batch, its random draws taken from the same seeded generator.

    Raises TrialError at the first non-finite training loss (step and epoch counted from 1).
    """
    start = time.perf_counter()
    if not epochs > 0:
        raise ValueError(f"`epochs > 0` must hold, but got epochs={epochs}")
    if batch_size < 1:
        raise ValueError(f"`batch_size >= 1` must hold, but got batch_size={batch_size}")
    n = len(data.y_train)
    x_train, y_train = data.x_train, data.y_train
    batch = min(batch_size, n)
    steps_per_epoch = max(1, n // batch)
    total = math.ceil(round(epochs * steps_per_epoch, 9))  # 0.7 * 10 is 7.000000000000001
    optimizer = torch.optim.SGD(
        param_groups(model, weight_decay), lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
    )
    groups = optimizer.param_groups
    was_training = model.training
    gen = torch.Generator().manual_seed(seed)
    recent: list[float] = []  # the mean loss of each step
    step = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        loop_start = time.perf_counter()
        try:
            while step < total:
                perm = torch.randperm(n, generator=gen)
                for b in range(min(steps_per_epoch, total - step)):
                    for g in groups:
                        g["lr"] = cosine_lr(lr, step, total)
                    idx = perm[b * batch : (b + 1) * batch]
                    xb = augment(x_train[idx], gen) if augment else x_train[idx].float()
                    loss = F.cross_entropy(model(xb), y_train[idx])
                    value = loss.item()  # the NaN guard's one sync per step: under 3 % of a step on CPU
                    if not math.isfinite(value):
                        raise TrialError(
                            f"non-finite training loss at step {step + 1} (epoch {step // steps_per_epoch + 1})"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    recent.append(value)
                    step += 1
                    if max_seconds is not None and time.perf_counter() - loop_start >= max_seconds:
                        total = step
                        break
        finally:
            model.train(was_training)
        loop_seconds = time.perf_counter() - loop_start
    tail = recent[-steps_per_epoch:]
    val_accuracy, val_loss = evaluate(model, data.x_val, data.y_val)
    return TrainResult(
        val_accuracy=val_accuracy,
        val_loss=val_loss,
        train_loss=sum(tail) / len(tail),
        epochs=step / steps_per_epoch,
        steps=step,
        seconds=time.perf_counter() - start,
        images_per_second=step * batch / loop_seconds if loop_seconds > 0 else float("inf"),
    )


def cosine_lr(lr: float, step: int, total: int) -> float:
    """The learning rate of 0-based ``step`` of ``total``: ``lr`` at step 0, falling on a half cosine towards 0."""
    return 0.5 * lr * (1.0 + math.cos(math.pi * step / total))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """SGD parameter groups: conv and linear weights (>= 2-d) decay; norms, biases and gates do not."""
    decay: dict[int, Tensor] = {}
    for m in model.modules():
        if isinstance(m, _WEIGHTED) and m.weight is not None and m.weight.requires_grad and m.weight.ndim >= 2:
            decay[id(m.weight)] = m.weight
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in decay]
    groups = [{"params": list(decay.values()), "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def predict_logits(model: nn.Module, x: Tensor, *, batch_size: int = 1024) -> Tensor:
    """Logits float32 ``N x classes`` of raw pixels ``x`` (uint8 or float ``N x C x H x W``), in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            parts = [model(x[i : i + batch_size].float()) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    if not parts:
        raise ValueError("predict_logits: x holds no images")
    return torch.cat(parts).float()


def evaluate(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 1024) -> tuple[float, float]:
    """``(accuracy in [0, 1], mean cross-entropy)`` on raw pixels ``x`` ``N x C x H x W`` and labels ``y`` ``N``.

    Runs under ``torch.inference_mode()`` in eval mode; the model's mode is restored afterwards.
    """
    if len(x) == 0:
        raise ValueError("evaluate: x holds no images")
    was_training = model.training
    model.eval()
    correct = 0
    loss = 0.0
    try:
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                logits = model(x[i : i + batch_size].float())
                target = y[i : i + batch_size]
                loss += F.cross_entropy(logits, target, reduction="sum").item()
                correct += int((logits.argmax(1) == target).sum())
    finally:
        model.train(was_training)
    return correct / len(x), loss / len(x)
