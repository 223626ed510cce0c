"""Train and evaluate one network on an in-memory Dataset: SGD (Nesterov) or AdamW, warm-up then cosine.

Thread counts are the process owner's business: a NAS worker is expected to run with
``torch.set_num_threads(1)`` (one worker per core), and nothing here changes it.
Batches are index slices of the in-memory uint8 tensors (no DataLoader, no worker processes).

CPU speed-ups, each measured on the three sampled Fashion-MNIST networks of ~50k parameters of
benchmarks/bench_train.py at one thread, every format explicit:

- channels_last pays on networks whose convolutions are all at least CHANNELS_LAST_MIN_WIDTH wide
  (1.05-1.31x faster over 14 sampled networks), and costs on narrower ones (0.84-0.92x: oneDNN's
  NHWC kernels lose on 2-3 channels), so ``channels_last="auto"`` decides by that rule,
  deterministically, per network. Batches and weights are given the chosen format's strides
  explicitly (in_format): a 1-channel batch is otherwise ambiguous, see there.
- Fused optimizer steps (one kernel over all parameters): 1.00-1.05x.
- Not used: mkldnn disabled (0.6-0.77x); torch.compile (1.2-1.4x once compiled, but ~60 s to
  compile one network on this machine, more than a search trial's whole training); bf16 autocast
  (1.07-1.35x on this AVX-512-BF16 CPU, but it changes the numbers the search compares and its
  effect on accuracy is unmeasured: a candidate for an opt-in setting).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

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
    the training throughput (forward + backward + update, 1 process, the caller's thread count);
    ``last_lr`` the learning rate of the last step; ``channels_last`` whether it trained in that
    memory format.
    """

    val_accuracy: float
    val_loss: float
    train_loss: float
    epochs: float
    steps: int
    seconds: float
    images_per_second: float
    last_lr: float = 0.0
    channels_last: bool = False


OPTIMIZERS = ("sgd", "adamw")
#: A time-capped run judges its pace once this share of ``max_seconds`` has passed (earlier steps,
#: the first especially, are slower than the rest).
TIME_JUDGED_AFTER = 0.05
#: ``channels_last="auto"`` uses channels_last when every Conv2d has at least this many output channels.
CHANNELS_LAST_MIN_WIDTH = 4


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
    seed: int,
    optimizer: Literal["sgd", "adamw"] = "sgd",
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 5e-4,
    warmup_epochs: float = 0.0,
    label_smoothing: float = 0.0,
    augment: Augment | None = None,
    channels_last: bool | Literal["auto"] = "auto",
    max_seconds: float | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data.x_train`` and score it on ``data.x_val``.

    ``model`` maps raw pixels, float32 ``N x C x H x W`` in [0, 255], to logits ``N x classes``
    (it normalises itself). An epoch is ``max(1, N // batch_size)`` steps over a fresh permutation
    drawn from ``torch.Generator().manual_seed(seed)`` (the last partial batch is dropped, so no
    step sees a batch of one); ``ceil(epochs * steps_per_epoch)`` steps in all.

    The optimizer is SGD (``momentum``, ``nesterov``) or AdamW (decoupled decay, betas 0.9/0.999);
    either way ``weight_decay`` applies to conv and linear weights only, never to norms, biases or
    gates (param_groups). The learning rate rises linearly over ``warmup_epochs`` and then falls on
    a cosine to 0 (lr_at). ``label_smoothing`` applies to the training loss only; the validation
    loss is plain cross-entropy. ``augment`` transforms each training batch, its random draws
    taken from the same seeded generator. ``channels_last``: train in that memory format (True),
    not (False), or where it pays ("auto": every conv at least CHANNELS_LAST_MIN_WIDTH wide); the
    model is handed back in the contiguous format either way.

    ``max_seconds`` caps the training time (at least one step is taken). Once the pace so far
    (judged after TIME_JUDGED_AFTER of the cap) projects the steps to overrun it, the schedule's
    progress becomes the larger of the steps done and the time spent, so a capped run still
    anneals to 0 when the time runs out instead of stopping at a high rate. A run on pace to
    finish in time keeps the step schedule.

    The global RNG (dropout) is reseeded from ``seed`` inside ``fork_rng``: the same weights and
    seed give identical results unless the time cap binds, and the caller's RNG state is untouched.

    Raises TrialError at the first non-finite training loss (step and epoch counted from 1).
    """
    start = time.perf_counter()
    if not epochs > 0:
        raise ValueError(f"`epochs > 0` must hold, but got epochs={epochs}")
    if batch_size < 1:
        raise ValueError(f"`batch_size >= 1` must hold, but got batch_size={batch_size}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, but got {optimizer!r}")
    if warmup_epochs < 0:
        raise ValueError(f"`warmup_epochs >= 0` must hold, but got warmup_epochs={warmup_epochs}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"`0 <= label_smoothing < 1` must hold, but got label_smoothing={label_smoothing}")
    n = len(data.y_train)
    x_train, y_train = data.x_train, data.y_train
    batch = min(batch_size, n)
    steps_per_epoch = max(1, n // batch)
    total = math.ceil(round(epochs * steps_per_epoch, 9))  # 0.7 * 10 is 7.000000000000001
    warmup = min(math.ceil(round(warmup_epochs * steps_per_epoch, 9)), total)
    nhwc = wants_channels_last(model) if channels_last == "auto" else bool(channels_last)
    was_training = model.training
    gen = torch.Generator().manual_seed(seed)
    recent: list[float] = []  # the mean loss of each step
    step = 0
    rate = lr_at(lr, 0, warmup)
    time_bound = False  # whether max_seconds, not the step count, ends this run
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _set_format(model, nhwc)
        opt = _optimizer(model, optimizer, lr, momentum, nesterov, weight_decay)
        model.train()
        loop_start = time.perf_counter()
        try:
            while step < total:
                perm = torch.randperm(n, generator=gen)
                for b in range(min(steps_per_epoch, total - step)):
                    progress = step / total
                    if max_seconds is not None and step > 0:
                        spent = time.perf_counter() - loop_start
                        if spent >= max_seconds:
                            total = step
                            break
                        if not time_bound and spent >= TIME_JUDGED_AFTER * max_seconds:
                            time_bound = spent / step * total > max_seconds
                        if time_bound:
                            progress = max(progress, spent / max_seconds)
                    rate = lr_at(lr, step, warmup, progress, warm_progress=warmup / total)
                    for g in opt.param_groups:
                        g["lr"] = rate
                    idx = perm[b * batch : (b + 1) * batch]
                    xb = augment(x_train[idx], gen) if augment else x_train[idx].float()
                    logits = model(in_format(xb, nhwc))
                    loss = F.cross_entropy(logits, y_train[idx], label_smoothing=label_smoothing)
                    value = loss.item()  # the NaN guard's one sync per step: under 3 % of a step on CPU
                    if not math.isfinite(value):
                        raise TrialError(
                            f"non-finite training loss at step {step + 1} (epoch {step // steps_per_epoch + 1})"
                        )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    recent.append(value)
                    step += 1
        finally:
            _set_format(model, nhwc=False)
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
        last_lr=rate,
        channels_last=nhwc,
    )


def lr_at(lr: float, step: int, warmup: int, progress: float = 0.0, *, warm_progress: float = 0.0) -> float:
    """The learning rate of 0-based ``step``: linear warm-up, then a half cosine from ``lr`` to 0.

    During the first ``warmup`` steps it is ``lr * (step + 1) / warmup``. After that it is
    ``lr * (1 + cos(pi * q)) / 2`` where ``q`` is how far ``progress`` (in [0, 1]: the share of the
    budget spent before this step) has come from ``warm_progress`` (the warm-up's share) to 1.
    Without a time limit progress is ``step / total``, so step 0 of an un-warmed run gets ``lr``
    and the last step ``lr * (1 + cos(pi * (total - 1) / total)) / 2``, just above 0.
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    span = 1.0 - warm_progress
    q = min(max((progress - warm_progress) / span, 0.0), 1.0) if span > 0 else 1.0
    return 0.5 * lr * (1.0 + math.cos(math.pi * q))


def wants_channels_last(model: nn.Module) -> bool:
    """The ``channels_last="auto"`` rule: the model has Conv2d layers, all with at least
    CHANNELS_LAST_MIN_WIDTH output channels."""
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    return bool(widths) and min(widths) >= CHANNELS_LAST_MIN_WIDTH


def in_format(x: Tensor, nhwc: bool) -> Tensor:
    """``x`` (``N x C x H x W``) laid out as NHWC (channels_last) or NCHW, with that format's strides.

    The strides matter, not only the memory: a 1-channel batch is laid out alike in both formats,
    and convolutions pick their format from the strides. ``x[idx]`` of a 1-channel tensor has
    NHWC strides, so without this a "NCHW" run on grey images silently ran NHWC from the first
    convolution on. Copies only when the memory is not already laid out so.
    """
    x = x.contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    _, c, h, w = x.shape
    strides = (h * w * c, 1, w * c, c) if nhwc else (c * h * w, h * w, w, 1)
    return x if x.stride() == strides else x.as_strided(x.shape, strides)


def _set_format(model: nn.Module, nhwc: bool) -> None:
    """Lay out every 4-d parameter and buffer of ``model`` as NHWC or NCHW (in_format), in place."""
    for t in [*model.parameters(), *model.buffers()]:
        if t.ndim == 4:
            t.data = in_format(t.data, nhwc)


def _optimizer(
    model: nn.Module, name: str, lr: float, momentum: float, nesterov: bool, weight_decay: float
) -> torch.optim.Optimizer:
    """SGD or AdamW over param_groups(model), fused (one kernel per step over all parameters)."""
    groups = param_groups(model, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), fused=True)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0, fused=True)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Optimizer parameter groups: conv and linear weights (>= 2-d) decay; norms, biases and gates do not."""
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
            parts = [model(in_format(x[i : i + batch_size].float(), nhwc=False)) for i in range(0, len(x), batch_size)]
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
                logits = model(in_format(x[i : i + batch_size].float(), nhwc=False))
                target = y[i : i + batch_size]
                loss += F.cross_entropy(logits, target, reduction="sum").item()
                correct += int((logits.argmax(1) == target).sum())
    finally:
        model.train(was_training)
    return correct / len(x), loss / len(x)
