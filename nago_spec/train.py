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
  compile one network on this machine, more than a search trial's whole training). bf16 autocast
  (1.07-1.35x on this AVX-512-BF16 CPU) changes the numbers the search compares, so on the CPU it
  is opt-in (``precision="bf16"``).

On a GPU (``device``): the data live on the device, batches, permutations and augmentation are
drawn there, and the loss reaches the host every LOSS_CHECK_EVERY steps, so a step makes no host
copy or sync; ``precision="auto"`` is fp32 there too (resolve_precision: bf16 autocast was 1.2 to 1.8
times slower a step on an H200). cuDNN autotuning stays off (it did not pay consistently there), and
torch.compile is not used (it paid only after 1,675 steps of one network; docs/RESULTS.md §7).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nago_spec.data import Dataset
from nago_spec.device import resolve_precision
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
    memory format; ``device`` and ``precision`` where and how it trained. ``restarted_at``: the step
    (from 1) at which the first attempt was found dead and training restarted with a warm-up (see
    train), None when it was not; ``epochs`` and ``steps`` are then the second attempt's. ``dead``: the
    attempt returned ended dead, its last DEAD_WINDOW losses still at a constant output's level (a
    second death, or one after the last judgement); a search trial's reason for failing says so
    (nago_spec.pipeline._did_not_learn).
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
    device: str = "cpu"
    precision: str = "fp32"
    restarted_at: int | None = None
    dead: bool = False


OPTIMIZERS = ("sgd", "adamw")
#: A time-capped run judges its pace once this share of ``max_seconds`` has passed (earlier steps,
#: the first especially, are slower than the rest).
TIME_JUDGED_AFTER = 0.05
#: ``channels_last="auto"`` uses channels_last when every Conv2d has at least this many output channels.
CHANNELS_LAST_MIN_WIDTH = 4
#: Steps between two host syncs of the training loss on an accelerator (the NaN guard): a sync per step
#: stalls a GPU on small networks, whose steps are launch-bound.
LOSS_CHECK_EVERY = 50
#: cuDNN autotuning on CUDA (torch.backends.cudnn.benchmark). Off until measured: a generated network
#: has dozens of distinct convolution shapes, each tuned at its first step, and a search trial may be
#: only a few hundred steps long (benchmarks/bench_gpu.py measures both).
CUDNN_BENCHMARK = False
#: A training has died when the mean loss of its last DEAD_WINDOW steps is still within DEAD_MARGIN
#: (relative) of the loss of a network that ignores its input (dead_loss). It is judged every
#: max(DEAD_WINDOW, steps // 10) steps. Narrow generated networks (a 1-channel stem, when the
#: parameter budget is small for the graph) die this way at lr 0.1 in their first steps: every ReLU of
#: a layer off, no gradient left to bring it back (docs/RESULTS.md §3).
DEAD_WINDOW = 50
DEAD_MARGIN = 0.01
#: A dead training restarts once, from the same initial weights and seed, with the rate warmed up over
#: this share of its steps (at least). 0.1 and 0.2 of a 1-epoch training both revived the network
#: above, 0.05 did not.
RESTART_WARMUP = 0.2
#: ... and over at least this many steps (or half the training, if shorter): what revives a network
#: is the number of small steps, not their share. Measured (docs/RESULTS.md §1, §3): warm-ups of 15
#: and 21 steps left 3 networks dead, 30 and 42 steps revived all 3 (50 steps, one of two tried). A
#: second chance, not a cure: at this floor the restarts of §1's seeds 2 and 3 revived 6 of 13 networks.
RESTART_MIN_WARMUP_STEPS = 30


def restart_warmup(total: int) -> int:
    """The warm-up steps of a dead training's restart, for a training of ``total`` steps."""
    return max(math.ceil(RESTART_WARMUP * total), min(RESTART_MIN_WARMUP_STEPS, total // 2))


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
        """Augmented float32 copy of the raw batch ``x`` (``N x C x H x W``), random draws from ``gen``
        (a generator on ``x``'s device: on a GPU nothing here touches the host)."""
        x = x.float()
        n, c, h, w = x.shape
        dev = x.device
        if self.crop_padding > 0:
            p = self.crop_padding
            padded = F.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (n, 1, 1, 1), generator=gen, device=dev)
            dx = torch.randint(0, 2 * p + 1, (n, 1, 1, 1), generator=gen, device=dev)
            rows = (dy + torch.arange(h, device=dev).view(1, 1, h, 1)).expand(n, c, h, w + 2 * p)
            cols = (dx + torch.arange(w, device=dev).view(1, 1, 1, w)).expand(n, c, h, w)
            x = padded.gather(2, rows).gather(3, cols)
        if self.flip:
            mirror = torch.rand(n, generator=gen, device=dev) < 0.5
            x = torch.where(mirror.view(n, 1, 1, 1), x.flip(3), x)
        if self.cutout > 0:
            half = self.cutout // 2
            cy = torch.randint(0, h, (n, 1, 1, 1), generator=gen, device=dev)
            cx = torch.randint(0, w, (n, 1, 1, 1), generator=gen, device=dev)
            r, q = torch.arange(h, device=dev).view(1, 1, h, 1), torch.arange(w, device=dev).view(1, 1, 1, w)
            hole = (r >= cy - half) & (r < cy - half + self.cutout) & (q >= cx - half) & (q < cx - half + self.cutout)
            fill = torch.tensor(self.fill, dtype=x.dtype, device=dev).view(1, -1, 1, 1).expand(1, c, 1, 1)
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
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    deterministic: bool = False,
) -> TrainResult:
    """Train ``model`` in place on ``data.x_train`` and score it on ``data.x_val``, on ``device``.

    ``model`` maps raw pixels, float32 ``N x C x H x W`` in [0, 255], to logits ``N x classes``
    (it normalises itself). An epoch is ``max(1, N // batch_size)`` steps over a fresh permutation
    drawn from ``torch.Generator(device).manual_seed(seed)`` (the last partial batch is dropped, so no
    step sees a batch of one); ``ceil(epochs * steps_per_epoch)`` steps in all.

    The optimizer is SGD (``momentum``, ``nesterov``) or AdamW (decoupled decay, betas 0.9/0.999);
    either way ``weight_decay`` applies to conv and linear weights only, never to norms, biases or
    gates (param_groups). The learning rate rises linearly over ``warmup_epochs`` and then falls on
    a cosine to 0 (lr_at). ``label_smoothing`` applies to the training loss only; the validation
    loss is plain cross-entropy. ``augment`` transforms each training batch, its random draws
    taken from the same seeded generator. ``channels_last``: train in that memory format (True),
    not (False), or where it pays ("auto": every conv at least CHANNELS_LAST_MIN_WIDTH wide); the
    model is handed back in the contiguous format either way.

    ``device``: the model and the data (uint8, moved once if not there yet: on_device) live there
    for the whole run and the model is handed back there; batches are index slices on the device,
    so a GPU step copies nothing from the host. ``precision``: "fp32", "bf16" (autocast), "fp16"
    (autocast and a gradient scaler; a GPU's) or "auto" (nago_spec.device.resolve_precision);
    validation always runs in fp32, as the exported model does. ``deterministic``: deterministic
    kernels only (torch.use_deterministic_algorithms, cuDNN without autotuning), for bit-identical
    GPU runs; the global settings are restored afterwards.

    A training that has died (the loss no lower than a network that ignores its input scores, see
    DEAD_WINDOW) restarts once from its initial weights and the same seed, warmed up over at least
    ``restart_warmup(steps)``; ``restarted_at`` reports it. A second death is returned as it is, with
    ``dead`` set.

    ``max_seconds`` caps the training time, a restart's included (at least one step is taken). Once
    the pace so far (judged after TIME_JUDGED_AFTER of the cap) projects the steps to overrun it, the
    schedule's progress becomes the larger of the steps done and the time spent, so a capped run still
    anneals to 0 when the time runs out instead of stopping at a high rate. A run on pace to finish in
    time keeps the step schedule.

    The global RNG (dropout) is reseeded from ``seed`` inside ``fork_rng``: the same weights and
    seed give identical results on one device unless the time cap binds, and the caller's RNG state
    is untouched.

    Raises TrialError at the first non-finite training loss (step and epoch counted from 1). On the
    CPU every step's loss is checked before its update; on an accelerator every LOSS_CHECK_EVERY
    steps (one host sync each), so up to that many steps run past the bad one before it is reported.
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
    dev = torch.device(device)
    precision = resolve_precision(precision, str(dev), dev.type == "cuda" and torch.cuda.is_bf16_supported())
    data = on_device(data, dev)
    model.to(dev)
    n = len(data.y_train)
    x_train, y_train = data.x_train, data.y_train
    batch = min(batch_size, n)
    steps_per_epoch = max(1, n // batch)
    total = math.ceil(round(epochs * steps_per_epoch, 9))  # 0.7 * 10 is 7.000000000000001
    warmup = min(math.ceil(round(warmup_epochs * steps_per_epoch, 9)), total)
    nhwc = wants_channels_last(model) if channels_last == "auto" else bool(channels_last)
    was_training = model.training
    gen = torch.Generator(device=dev).manual_seed(seed)
    check_every = _loss_check_every(dev)
    losses: list[float] = []  # the mean loss of each step, checked
    unchecked: list[Tensor] = []  # losses of the latest steps, still on the device
    step = 0
    rate = lr_at(lr, 0, warmup)
    time_bound = False  # whether max_seconds, not the step count, ends this run
    scaler = torch.amp.GradScaler(dev.type) if precision == "fp16" else None

    def check_losses(last: int) -> None:
        """Bring the unchecked losses, of the steps up to 1-based ``last``, to the host; raise at the
        first non-finite one."""
        values = [unchecked[0].item()] if len(unchecked) == 1 else torch.stack(unchecked).tolist()
        first = last - len(unchecked) + 1
        for j, value in enumerate(values):
            if not math.isfinite(value):
                bad = first + j
                raise TrialError(f"non-finite training loss at step {bad} (epoch {(bad - 1) // steps_per_epoch + 1})")
        losses.extend(values)
        unchecked.clear()

    floor = dead_loss(y_train, label_smoothing, data.num_classes)
    judge_every = max(DEAD_WINDOW, total // 10)
    restarted_at: int | None = None  # the dead attempt's steps, when there was one

    with torch.random.fork_rng(devices=_rng_devices(dev)), _kernels(dev, deterministic):
        torch.manual_seed(seed)
        _set_format(model, nhwc)
        initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
        opt = _optimizer(model, optimizer, lr, momentum, nesterov, weight_decay)
        model.train()
        loop_start = time.perf_counter()
        try:
            while step < total:
                perm = torch.randperm(n, generator=gen, device=dev)
                dead = False
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
                    with _autocast(dev, precision):
                        logits = model(in_format(xb, nhwc))
                        loss = F.cross_entropy(logits, y_train[idx], label_smoothing=label_smoothing)
                    unchecked.append(loss.detach())
                    if len(unchecked) >= check_every:  # on the CPU: every step, before its update
                        check_losses(step + 1)
                    opt.zero_grad(set_to_none=True)
                    if scaler is None:
                        loss.backward()
                        opt.step()
                    else:
                        scaler.scale(loss).backward()
                        scaler.step(opt)
                        scaler.update()
                    step += 1
                    if restarted_at is None and step % judge_every == 0 and _has_died(losses, floor):
                        dead = True
                        break
                if dead:  # once: the same start and batches, warmed up
                    restarted_at = step
                    model.load_state_dict(initial)
                    opt = _optimizer(model, optimizer, lr, momentum, nesterov, weight_decay)
                    scaler = torch.amp.GradScaler(dev.type) if precision == "fp16" else None
                    gen.manual_seed(seed)
                    torch.manual_seed(seed)
                    warmup = max(warmup, restart_warmup(total))
                    step = 0
                    losses.clear()
                    unchecked.clear()
            if unchecked:
                check_losses(step)
        finally:
            _set_format(model, nhwc=False)
            model.train(was_training)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        loop_seconds = time.perf_counter() - loop_start
    tail = losses[-steps_per_epoch:]
    val_accuracy, val_loss = evaluate(model, data.x_val, data.y_val)
    return TrainResult(
        val_accuracy=val_accuracy,
        val_loss=val_loss,
        train_loss=sum(tail) / len(tail),
        epochs=step / steps_per_epoch,
        steps=step,
        seconds=time.perf_counter() - start,
        images_per_second=((restarted_at or 0) + step) * batch / loop_seconds if loop_seconds > 0 else float("inf"),
        last_lr=rate,
        channels_last=nhwc,
        device=str(dev),
        precision=precision,
        restarted_at=restarted_at,
        dead=_has_died(losses, floor),
    )


def dead_loss(y: Tensor, label_smoothing: float = 0.0, classes: int = 0) -> float:
    """The training loss of a network that ignores its input, at its best: the entropy of the mean
    (smoothed) target, ``H((1 - eps) * prior + eps / classes)``, where ``prior`` is the label frequencies
    of ``y`` over ``classes`` (at least max(y) + 1); ln(classes) for balanced classes, with or without
    smoothing."""
    counts = torch.bincount(y.flatten().cpu(), minlength=classes).double()
    mean = (1.0 - label_smoothing) * counts / counts.sum() + label_smoothing / len(counts)
    mean = mean[mean > 0]
    return float(-(mean * mean.log()).sum())


def at_chance(val_accuracy: float, y_val: Tensor) -> tuple[bool, float]:
    """Whether ``val_accuracy`` is no better than always answering the most frequent class of ``y_val``,
    within two standard errors of that rate, and that rate; (False, rate) without validation images or
    with one class."""
    n = len(y_val)
    if n == 0:
        return False, 0.0
    majority = torch.bincount(y_val.flatten().cpu()).max().item() / n
    return majority < 1 and val_accuracy <= majority + 2 * math.sqrt(majority * (1 - majority) / n), majority


def _has_died(losses: list[float], floor: float) -> bool:
    """Whether the last DEAD_WINDOW checked losses average within DEAD_MARGIN of ``floor`` (dead_loss)
    or above it; never for a floor of 0 (one class: nothing to learn)."""
    if floor <= 0 or len(losses) < DEAD_WINDOW:
        return False
    return sum(losses[-DEAD_WINDOW:]) / DEAD_WINDOW >= (1.0 - DEAD_MARGIN) * floor


def _loss_check_every(dev: torch.device) -> int:
    """Steps between two checks of the training loss: every step on the CPU (a sync costs nothing
    there), LOSS_CHECK_EVERY on an accelerator."""
    return 1 if dev.type == "cpu" else LOSS_CHECK_EVERY


def on_device(data: Dataset, device: str | torch.device) -> Dataset:
    """``data`` with its tensors on ``device`` (uint8 pixels stay uint8); ``data`` itself when they
    are there already."""
    dev = torch.device(device)
    if data.x_train.device == dev or (dev.index is None and data.x_train.device.type == dev.type):
        return data
    moved = {k: getattr(data, k).to(dev) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
    return dataclasses.replace(data, **moved)


def _rng_devices(dev: torch.device) -> list[int]:
    """The CUDA devices whose RNG fork_rng must save and restore (none off CUDA)."""
    if dev.type != "cuda":
        return []
    return [dev.index if dev.index is not None else torch.cuda.current_device()]


def _autocast(dev: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@contextlib.contextmanager
def _kernels(dev: torch.device, deterministic: bool) -> Iterator[None]:
    """cuDNN autotuning (CUDNN_BENCHMARK) or, with ``deterministic``, deterministic kernels only,
    for the duration; the global settings are restored after."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic)
    if deterministic:
        if dev.type == "cuda":  # cuBLAS reads it when its first handle is made: set before any matmul
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = CUDNN_BENCHMARK and not deterministic and dev.type == "cuda"
    torch.backends.cudnn.deterministic = deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[1], saved[2]


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

    Runs on the model's device (batches of ``x`` are moved there); the logits come back on the CPU.
    The model's train/eval mode is restored afterwards.
    """
    dev = device_of(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            parts = [model(in_format(x[i : i + batch_size].to(dev).float(), nhwc=False)).cpu()
                     for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    if not parts:
        raise ValueError("predict_logits: x holds no images")
    return torch.cat(parts).float()


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (the CPU for a model without either)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def evaluate(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 1024) -> tuple[float, float]:
    """``(accuracy in [0, 1], mean cross-entropy)`` on raw pixels ``x`` ``N x C x H x W`` and labels ``y`` ``N``.

    Runs under ``torch.inference_mode()`` in eval mode, in fp32, on the model's device (batches
    not there yet are moved), with one host sync at the end; the model's mode is restored afterwards.
    """
    if len(x) == 0:
        raise ValueError("evaluate: x holds no images")
    dev = device_of(model)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    loss = torch.zeros((), dtype=torch.float64, device=dev)
    try:
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                logits = model(in_format(x[i : i + batch_size].to(dev).float(), nhwc=False))
                target = y[i : i + batch_size].to(dev)
                loss += F.cross_entropy(logits, target, reduction="sum").double()
                correct += (logits.argmax(1) == target).sum()
    finally:
        model.train(was_training)
    return int(correct) / len(x), float(loss) / len(x)
