"""Tests of nago_spec.train: determinism, the NaN guard, fractional epochs, max_seconds, learning, evaluation."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from nago_spec.data import Dataset, load_dataset
from nago_spec.errors import TrialError
from nago_spec.network import Normalize
import nago_spec.train as train_module
from nago_spec.train import (
    DEAD_WINDOW,
    RESTART_MIN_WARMUP_STEPS,
    RESTART_WARMUP,
    Augment,
    TrainResult,
    at_chance,
    dead_loss,
    evaluate,
    in_format,
    lr_at,
    param_groups,
    predict_logits,
    restart_warmup,
    train,
    wants_channels_last,
)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", seed=0)


class Gated(nn.Module):
    """A 0-d gate parameter, like the network's sigmoid gates: must not be weight-decayed."""

    def __init__(self):
        super().__init__()
        self.gate = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        return x * torch.sigmoid(self.gate)


def small_cnn(data: Dataset, seed: int = 0, dropout: float = 0.0) -> nn.Module:
    """About 5k parameters: conv-BN-ReLU x2, pool, gate, dropout, linear; raw pixels in."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = nn.Sequential(
        Normalize(data.mean, data.std),
        nn.Conv2d(data.in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), Gated(), nn.Dropout(dropout),
        nn.Linear(64, data.num_classes),
    )
    torch.random.set_rng_state(gen_state)
    return model


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_same_weights_and_seed_give_identical_results_and_keep_the_callers_rng(digits):
    a = small_cnn(digits, dropout=0.3)
    b = copy.deepcopy(a)
    state = torch.random.get_rng_state()
    ra = train(a, digits, epochs=0.5, batch_size=64, lr=0.05, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    rb = train(b, digits, epochs=0.5, batch_size=64, lr=0.05, seed=7)
    assert ra.steps == rb.steps
    assert (ra.val_accuracy, ra.val_loss, ra.train_loss) == (rb.val_accuracy, rb.val_loss, rb.train_loss)
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = small_cnn(digits, dropout=0.3)
    train(c, digits, epochs=0.5, batch_size=64, lr=0.05, seed=8)
    assert not torch.equal(_weights(c)["1.weight"], wa["1.weight"])


def test_fractional_epochs_count_steps(digits):
    steps_per_epoch = len(digits.y_train) // 64  # the last partial batch is dropped
    r = train(small_cnn(digits), digits, epochs=0.3, batch_size=64, lr=0.05, seed=0)
    assert r.steps == math.ceil(0.3 * steps_per_epoch)
    assert r.epochs == pytest.approx(r.steps / steps_per_epoch)
    r = train(small_cnn(digits), digits, epochs=1.5, batch_size=64, lr=0.05, seed=0)
    assert r.steps == math.ceil(1.5 * steps_per_epoch)
    digits10 = len(digits.y_train) // 10  # a batch size with exactly 10 steps per epoch
    assert train(small_cnn(digits), digits, epochs=0.7, batch_size=digits10, lr=0.05, seed=0).steps == 7
    assert isinstance(r, TrainResult) and r.seconds > 0 and r.images_per_second > 0
    assert 0 <= r.val_accuracy <= 1 and math.isfinite(r.val_loss) and math.isfinite(r.train_loss)


def test_max_seconds_stops_after_the_crossing_step(digits):
    r = train(small_cnn(digits), digits, epochs=5, batch_size=64, lr=0.05, seed=0, max_seconds=0.0)
    steps_per_epoch = len(digits.y_train) // 64
    assert r.steps == 1 and r.epochs == pytest.approx(1 / steps_per_epoch)
    assert 0 <= r.val_accuracy <= 1


def test_nan_guard_model_output(digits):
    class NaNOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x.flatten(1)) * float("nan")

    model = NaNOut().eval()
    with pytest.raises(TrialError, match=r"^non-finite training loss at step 1 \(epoch 1\)$"):
        train(model, digits, epochs=1, batch_size=64, lr=0.05, seed=0)
    assert not model.training  # the mode it was given, even on failure


def test_nan_guard_diverging_lr(digits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))  # raw 0..255 input
    with pytest.raises(TrialError, match=r"non-finite training loss at step \d+ \(epoch \d+\)"):
        train(model, digits, epochs=3, batch_size=64, lr=1e6, seed=0)


def test_a_small_cnn_learns_digits(digits):
    model = small_cnn(digits)
    r = train(model, digits, epochs=3, batch_size=64, lr=0.1, seed=0)
    assert r.val_accuracy > 0.8
    assert r.epochs == 3.0 and r.restarted_at is None and not r.dead
    assert model.training  # train() restores the mode it found
    test_acc, test_loss = evaluate(model, digits.x_test, digits.y_test)
    assert test_acc > 0.8 and test_loss < 1.0


class Blind(nn.Module):
    """Ignores its input: its logits are a bias, so its training loss can get no lower than dead_loss."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.fc = nn.Linear(1, classes)

    def forward(self, x):
        return self.fc(x.flatten(1)[:, :1] * 0.0)


def one_channel_cnn(data: Dataset, seed: int) -> nn.Module:
    """A 1-channel bottleneck like a generated network's at a small parameter budget: one ReLU for the
    whole first layer."""
    torch.manual_seed(seed)
    return nn.Sequential(
        Normalize(data.mean, data.std),
        nn.Conv2d(data.in_channels, 1, 3, padding=1), nn.BatchNorm2d(1), nn.ReLU(),
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, data.num_classes),
    )


def test_dead_loss_is_the_entropy_of_the_mean_smoothed_target():
    assert dead_loss(torch.arange(10).repeat(5)) == pytest.approx(math.log(10))
    assert dead_loss(torch.arange(10).repeat(5), label_smoothing=0.3) == pytest.approx(math.log(10))
    y = torch.tensor([0, 0, 0, 1])
    assert dead_loss(y) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    m = (0.9 * 0.75 + 0.05, 0.9 * 0.25 + 0.05)
    assert dead_loss(y, label_smoothing=0.1) == pytest.approx(-sum(p * math.log(p) for p in m))
    assert dead_loss(torch.zeros(8, dtype=torch.long)) == 0.0
    # a class absent from the training labels still takes its share of the smoothing
    m = (0.9 * 0.75 + 0.1 / 3, 0.9 * 0.25 + 0.1 / 3, 0.1 / 3)
    assert dead_loss(y, label_smoothing=0.1, classes=3) == pytest.approx(-sum(p * math.log(p) for p in m))


def test_a_training_that_learns_nothing_restarts_once(digits):
    steps_per_epoch = len(digits.y_train) // 64
    epochs = math.ceil(DEAD_WINDOW / steps_per_epoch) + 1
    r = train(Blind(), digits, epochs=epochs, batch_size=64, lr=0.1, seed=0)
    assert r.restarted_at == DEAD_WINDOW  # judged at the first window; the second attempt is not judged
    assert r.steps == epochs * steps_per_epoch and r.epochs == epochs
    assert r.train_loss == pytest.approx(dead_loss(digits.y_train), rel=0.05)
    assert r.dead  # the second attempt died too: reported, for the caller to judge (pipeline._did_not_learn)
    short = train(Blind(), digits, epochs=1, batch_size=64, lr=0.1, seed=0)
    assert short.restarted_at is None and not short.dead  # fewer steps than one window: never judged


def test_a_network_that_died_is_revived_by_the_warmed_up_restart(digits, monkeypatch):
    # seed 0 of this network dies in its first 50 steps at lr 1: one ReLU, off for every pixel
    dead = train(one_channel_cnn(digits, 0), digits, epochs=5, batch_size=64, lr=1.0, seed=0)
    assert dead.restarted_at == DEAD_WINDOW and dead.val_accuracy > 0.8 and not dead.dead
    with monkeypatch.context() as m:
        m.setattr(train_module, "_has_died", lambda losses, floor: False)
        never = train(one_channel_cnn(digits, 0), digits, epochs=5, batch_size=64, lr=1.0, seed=0)
    assert never.restarted_at is None and never.val_accuracy < 0.15
    assert never.train_loss == pytest.approx(dead_loss(digits.y_train), rel=0.02)
    # the restart is the warm-up run: the same start and seed, warmed up over restart_warmup(steps)
    steps = 5 * (len(digits.y_train) // 64)
    warmed = train(one_channel_cnn(digits, 0), digits, epochs=5, batch_size=64, lr=1.0, seed=0,
                   warmup_epochs=restart_warmup(steps) / (steps / 5))
    assert warmed.restarted_at is None
    same = ("val_accuracy", "val_loss", "train_loss", "steps")
    assert [getattr(warmed, k) for k in same] == [getattr(dead, k) for k in same]


def test_the_restart_warms_up_over_a_fifth_of_the_steps_and_at_least_30_or_half():
    assert RESTART_WARMUP == 0.2 and RESTART_MIN_WARMUP_STEPS == 30
    assert [restart_warmup(n) for n in (55, 75, 150, 151, 422)] == [27, 30, 30, 31, 85]


def test_a_short_training_that_died_restarts_with_a_warm_up_of_at_least_min_steps(digits):
    # 4 epochs of 17 steps: a fifth of the steps is 14, too few small steps to revive a narrow network
    # (15 and 21 did not in RESULTS §1 and §3); the restart warms up over RESTART_MIN_WARMUP_STEPS
    steps_per_epoch = len(digits.y_train) // 64
    steps = 4 * steps_per_epoch
    assert DEAD_WINDOW < steps and math.ceil(RESTART_WARMUP * steps) < RESTART_MIN_WARMUP_STEPS <= steps // 2
    dead = train(one_channel_cnn(digits, 0), digits, epochs=4, batch_size=64, lr=1.0, seed=0)
    assert dead.restarted_at == DEAD_WINDOW
    warmed = train(one_channel_cnn(digits, 0), digits, epochs=4, batch_size=64, lr=1.0, seed=0,
                   warmup_epochs=RESTART_MIN_WARMUP_STEPS / steps_per_epoch)
    same = ("val_accuracy", "val_loss", "train_loss", "steps")
    assert [getattr(warmed, k) for k in same] == [getattr(dead, k) for k in same]


def test_at_chance_is_within_two_standard_errors_of_the_most_frequent_class():
    y = torch.tensor([0] * 60 + [1] * 40)  # majority 0.6, standard error sqrt(0.24 / 100) = 0.049
    assert at_chance(0.6, y) == (True, 0.6)
    assert at_chance(0.69, y)[0] and not at_chance(0.70, y)[0]  # 0.6 + 2 x 0.049 = 0.698
    assert at_chance(0.0, torch.zeros(5, dtype=torch.long)) == (False, 1.0)  # one class: nothing to beat
    assert at_chance(0.0, torch.zeros(0, dtype=torch.long)) == (False, 0.0)


def test_evaluate_and_predict_logits_agree_and_restore_mode(digits):
    model = small_cnn(digits)
    logits = predict_logits(model, digits.x_val, batch_size=100)
    assert logits.shape == (len(digits.y_val), 10) and logits.dtype == torch.float32
    assert model.training
    acc, loss = evaluate(model, digits.x_val, digits.y_val, batch_size=37)
    assert acc == pytest.approx(float((logits.argmax(1) == digits.y_val).double().mean()))
    assert loss == pytest.approx(float(nn.functional.cross_entropy(logits, digits.y_val)), rel=1e-5)
    model.eval()
    evaluate(model, digits.x_val, digits.y_val)
    assert not model.training


def test_weight_decay_only_on_conv_and_linear_weights(digits):
    model = small_cnn(digits)
    decay, rest = param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and rest["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    named = dict(model.named_parameters())
    assert {k for k, p in named.items() if id(p) in decayed} == {"1.weight", "4.weight", "11.weight"}
    assert len(decay["params"]) + len(rest["params"]) == len(named)  # the gate, biases, BN: no decay


def test_cosine_schedule():
    assert lr_at(0.1, 0, 0, 0 / 10) == pytest.approx(0.1)
    assert lr_at(0.1, 5, 0, 5 / 10) == pytest.approx(0.05)
    assert 0 < lr_at(0.1, 9, 0, 9 / 10) < 0.003


def test_warm_up_rises_linearly_then_the_cosine_starts_at_lr():
    total, warm = 20, 4
    rates = [lr_at(0.1, s, warm, s / total, warm_progress=warm / total) for s in range(total)]
    assert rates[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert rates[4] == pytest.approx(0.1)  # the cosine's first step
    assert rates[12] == pytest.approx(0.05)  # half way through the 16 cosine steps
    assert all(a >= b for a, b in itertools.pairwise(rates[4:])) and 0 < rates[-1] < 0.002
    assert lr_at(0.1, 0, 0, 1.0) == 0.0  # a spent budget


def test_warm_up_in_train_counts_epochs_of_steps(digits):
    steps_per_epoch = len(digits.y_train) // 64
    r = train(small_cnn(digits), digits, epochs=2, warmup_epochs=0.5, batch_size=64, lr=0.05, seed=0)
    warm = math.ceil(0.5 * steps_per_epoch)
    total = 2 * steps_per_epoch
    assert r.last_lr == pytest.approx(lr_at(0.05, total - 1, warm, (total - 1) / total, warm_progress=warm / total))
    with pytest.raises(ValueError, match="warmup_epochs >= 0"):
        train(small_cnn(digits), digits, epochs=1, warmup_epochs=-1, batch_size=64, lr=0.05, seed=0)


def test_a_generous_time_cap_keeps_the_step_schedule_and_determinism(digits):
    a, b = small_cnn(digits), small_cnn(digits)
    ra = train(a, digits, epochs=1, batch_size=64, lr=0.1, seed=2)
    rb = train(b, digits, epochs=1, batch_size=64, lr=0.1, seed=2, max_seconds=600)
    assert (ra.steps, ra.last_lr, ra.val_loss) == (rb.steps, rb.last_lr, rb.val_loss)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_time_capped_run_still_anneals_to_zero(digits):
    """With max_seconds the schedule follows the time spent: the last step's rate is near 0, not lr."""
    r = train(small_cnn(digits), digits, epochs=500, batch_size=64, lr=0.1, seed=0, max_seconds=1.5)
    assert r.epochs < 500
    assert r.last_lr < 0.1 * 0.1  # progress above 0.8 at the last step
    assert r.val_accuracy > 0.5


def test_adamw_learns(digits):
    model = small_cnn(digits)
    r = train(model, digits, epochs=3, batch_size=64, lr=1e-2, weight_decay=0.05, optimizer="adamw", seed=0)
    assert r.val_accuracy > 0.8
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adamw"):
        train(small_cnn(digits), digits, epochs=1, batch_size=64, lr=0.1, optimizer="adam", seed=0)


def test_label_smoothing_applies_to_the_training_loss_only(digits):
    eps, k = 0.2, 10
    floor = -((1 - eps + eps / k) * math.log(1 - eps + eps / k) + (k - 1) * (eps / k) * math.log(eps / k))
    plain = train(small_cnn(digits), digits, epochs=4, batch_size=64, lr=0.1, seed=0)
    smooth = train(small_cnn(digits), digits, epochs=4, batch_size=64, lr=0.1, seed=0, label_smoothing=eps)
    assert plain.train_loss < floor  # a plain loss can go below the smoothed targets' entropy...
    assert smooth.train_loss >= floor  # ...a smoothed one cannot
    assert smooth.val_loss < floor  # the validation loss is plain cross-entropy
    assert smooth.val_accuracy > 0.8


def test_channels_last_auto_rule_and_the_model_comes_back_contiguous(digits):
    wide = small_cnn(digits)  # convs of 8 and 16 channels
    narrow = nn.Sequential(Normalize(digits.mean, digits.std), nn.Conv2d(1, 2, 3), nn.ReLU(),
                           nn.Flatten(), nn.Linear(2 * 6 * 6, 10))
    assert wants_channels_last(wide) and not wants_channels_last(narrow)
    assert not wants_channels_last(nn.Linear(3, 3))
    assert train(wide, digits, epochs=0.5, batch_size=64, lr=0.05, seed=0).channels_last
    assert not train(narrow, digits, epochs=0.5, batch_size=64, lr=0.05, seed=0).channels_last
    for model in (wide, narrow):
        for p in model.parameters():
            assert p.is_contiguous()
    forced = train(small_cnn(digits), digits, epochs=0.5, batch_size=64, lr=0.05, seed=0, channels_last=False)
    assert not forced.channels_last


def test_in_format_gives_the_formats_strides_even_for_one_channel(digits):
    batch = digits.x_train[torch.arange(4)].float()  # the strides of a size-1 dim are whatever numpy left
    assert in_format(batch, nhwc=False).stride() == (64, 64, 8, 1)
    assert in_format(batch, nhwc=True).stride() == (64, 1, 8, 1)
    grey = torch.zeros(4, 1, 8, 8).as_strided((4, 1, 8, 8), (64, 1, 8, 1))
    assert in_format(grey, nhwc=False).stride() == (64, 64, 8, 1)
    assert in_format(grey, nhwc=True).stride() == (64, 1, 8, 1)
    rgb = torch.arange(2 * 3 * 4 * 5.0).view(2, 3, 4, 5)
    assert in_format(rgb, nhwc=True).stride() == (60, 1, 15, 3)
    assert torch.equal(in_format(rgb, nhwc=True), rgb) and in_format(rgb, nhwc=False) is rgb


@pytest.mark.parametrize("nhwc", [False, True])
def test_training_runs_in_the_chosen_memory_format(digits, nhwc):
    model = small_cnn(digits)
    seen = []
    model[1].register_forward_hook(lambda m, i, o: seen.append(o.is_contiguous(memory_format=torch.channels_last)))
    train(model, digits, epochs=0.1, batch_size=64, lr=0.05, seed=0, channels_last=nhwc)
    assert seen and all(s == nhwc for s in seen[:-1])  # the last call is the NCHW validation pass
    assert seen[-1] is False
    assert model[1].weight.stride() == (9, 9, 3, 1)  # handed back NCHW, even the 1-channel stem


def test_every_option_together_is_deterministic(digits):
    aug = Augment(crop_padding=1, flip=True, cutout=3, fill=tuple(255 * m for m in digits.mean))
    kwargs = {"epochs": 1.5, "batch_size": 64, "lr": 3e-3, "seed": 11, "optimizer": "adamw", "weight_decay": 0.05,
              "warmup_epochs": 0.5, "label_smoothing": 0.1, "augment": aug, "channels_last": True}
    a, b = small_cnn(digits, dropout=0.2), small_cnn(digits, dropout=0.2)
    ra, rb = train(a, digits, **kwargs), train(b, digits, **kwargs)
    assert ra == rb.__class__(**{**rb.__dict__, "seconds": ra.seconds, "images_per_second": ra.images_per_second})
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_bad_arguments(digits):
    with pytest.raises(ValueError, match=r"`epochs > 0` must hold, but got epochs=0"):
        train(small_cnn(digits), digits, epochs=0, batch_size=64, lr=0.1, seed=0)
    with pytest.raises(ValueError, match="no images"):
        evaluate(small_cnn(digits), digits.x_val[:0], digits.y_val[:0])


def _windows(x: torch.Tensor, p: int) -> list[torch.Tensor]:
    """Every crop of the original size from ``x`` (C x H x W) zero-padded by ``p``."""
    h, w = x.shape[1:]
    padded = torch.nn.functional.pad(x.float(), (p, p, p, p))
    return [padded[:, i : i + h, j : j + w] for i in range(2 * p + 1) for j in range(2 * p + 1)]


def test_random_crop_takes_a_window_of_the_padded_image_and_varies(digits):
    x = digits.x_train[:64]
    out = Augment(crop_padding=2)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.float32
    offsets = set()
    for img, aug in zip(x, out):
        hits = [k for k, win in enumerate(_windows(img, 2)) if torch.equal(win, aug)]
        assert hits, "not a window of the padded image"
        offsets.add(hits[0])
    assert len(offsets) > 10  # 25 possible offsets, drawn per image


def test_flip_mirrors_about_half_the_images(digits):
    x = digits.x_train[:200]
    out = Augment(flip=True)(x, torch.Generator().manual_seed(0))
    mirrored = [not torch.equal(a, b.float()) and torch.equal(a, b.float().flip(2)) for a, b in zip(out, x)]
    kept = [torch.equal(a, b.float()) for a, b in zip(out, x)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 70 < sum(mirrored) < 130


def test_cutout_fills_one_clipped_square_with_the_mean(digits):
    x = digits.x_train[:100].float() + 1.0  # no pixel equals the fill by chance
    aug = Augment(cutout=4, fill=(0.5,))
    out = aug(x, torch.Generator().manual_seed(0))
    for a, b in zip(out, x):
        hole = a[0] != b[0]
        assert torch.all(a[0][hole] == 0.5)
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 4 and 1 <= len(cols) <= 4  # a square, clipped at the border
        assert hole.sum() == len(rows) * len(cols)  # a full rectangle
        assert torch.all(rows.diff() == 1) and torch.all(cols.diff() == 1)


def test_augmentation_is_deterministic_given_the_seed_and_still_learns(digits):
    aug = Augment(crop_padding=1, flip=False, cutout=3, fill=tuple(255 * m for m in digits.mean))
    x = digits.x_train[:32]
    assert torch.equal(aug(x, torch.Generator().manual_seed(5)), aug(x, torch.Generator().manual_seed(5)))
    runs = []
    for _ in range(2):
        model = small_cnn(digits)
        r = train(model, digits, epochs=6, batch_size=64, lr=0.1, seed=3, augment=aug)
        runs.append((r.val_accuracy, r.train_loss))
    assert runs[0] == runs[1]
    assert runs[0][0] > 0.8
    assert not Augment() and Augment(flip=True)
