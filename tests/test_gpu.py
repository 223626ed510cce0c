"""Training on a real CUDA GPU (issue 19): the paths tests/test_device.py checks on the CPU, on the device.

Marked ``gpu``; every test skips, with its reason, where torch sees no CUDA GPU (this repository's
CI and its 2-core development machine have none). Run them on a GPU machine with
``python -m pytest -m gpu tests/test_gpu.py``.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from nago_spec.data import load_dataset
from nago_spec.spec import load_spec
from nago_spec.store import Store, TrialState
from nago_spec.train import train
from nago_spec.runners.backends import ProcessBackend
from nago_spec.runners.run import RunOptions, run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason=f"no CUDA GPU visible to torch {torch.__version__} "
                              f"({'a CPU-only build' if not torch.backends.cuda.is_built() else 'no device found'})"),
]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", val_fraction=0.2, seed=0)


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                         nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


@pytest.fixture(scope="module")
def on_the_cpu(digits):
    """The same training's validation accuracy on the CPU: the reference a GPU training must reach."""
    return train(small_cnn(), digits, epochs=4, batch_size=64, lr=0.1, seed=0, device="cpu").val_accuracy


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_network_learns_on_the_gpu_in_each_precision(digits, on_the_cpu, precision):
    """The first H200 run (30 November) measured 0.746, 0.749 and 0.746 for fp32, bf16 and fp16, and 0.732
    for the same training on the CPU: the 0.8 this test asked for was never measured, not a GPU fault."""
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU does not support bf16")
    model = small_cnn()
    r = train(model, digits, epochs=4, batch_size=64, lr=0.1, seed=0, device="cuda:0", precision=precision)
    assert (r.device, r.precision) == ("cuda:0", precision)
    assert r.val_accuracy > 0.5 and abs(r.val_accuracy - on_the_cpu) <= 0.05, (r.val_accuracy, on_the_cpu)
    assert next(model.parameters()).device.type == "cuda"  # handed back where it trained


def test_deterministic_gpu_training_is_bit_identical(digits):
    a, b = small_cnn(), small_cnn()
    kw = dict(epochs=1, batch_size=64, lr=0.1, seed=5, device="cuda:0", precision="fp32", deterministic=True)
    ra, rb = train(a, digits, **kw), train(b, digits, **kw)
    assert ra.train_loss == rb.train_loss
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.are_deterministic_algorithms_enabled()


def test_the_data_goes_to_the_gpu_once_per_worker_as_uint8(tiny_spec):
    from nago_spec.runners import worker

    a = worker.load_data(load_spec(tiny_spec), device="cuda:0")
    assert a is worker.load_data(load_spec(tiny_spec), device="cuda:0")
    assert a.x_train.device.type == "cuda" and a.x_train.dtype == torch.uint8


def grab(gib: float) -> str:
    """Allocate ``gib`` GiB on this worker's GPU; what happened, and the memory the worker holds after."""
    from nago_spec.device import free_memory

    try:
        x = torch.empty(int(gib * 2**30), dtype=torch.uint8, device="cuda:0")
        del x
        outcome = "ok"
    except torch.OutOfMemoryError:
        outcome = "oom"
    free_memory("cuda:0")
    return f"{outcome} {torch.cuda.memory_reserved(0)}"


def test_one_worker_s_out_of_memory_leaves_its_neighbours_on_the_gpu_working():
    """Two workers share GPU 0, each capped at 45 % of it: one asking for 60 % runs out of memory,
    gives it back, and both go on allocating their share."""
    from nago_spec.device import machine, resolve_device, worker_bindings

    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    bindings = worker_bindings(resolve_device("cuda:0", machine()), 2)
    with ProcessBackend(bindings=bindings) as pool:
        assert pool.submit(grab, 0.6 * total).result(timeout=300) == "oom 0"
        both = [pool.submit(grab, 0.3 * total) for _ in range(2)]
        assert [f.result(timeout=300).split()[0] for f in both] == ["ok", "ok"]


def test_a_tiny_search_with_two_workers_on_one_gpu_and_its_export(tmp_path, tiny_spec):
    spec = tmp_path / "gpu.toml"
    spec.write_text(tiny_spec.read_text().replace(
        '[run]\nbackend = "local"\n', '[run]\nbackend = "process"\ndevice = "cuda:0"\nworkers_per_device = 2\n'))
    out = tmp_path / "run"
    run(spec, RunOptions(out=out, mode="quiet"))
    with Store(out / "study.db") as store:
        trials = store.trials()
    assert all(t.state is TrialState.COMPLETE for t in trials), [t.error for t in trials]
    assert {t.device for t in trials} == {"cuda:0"}
    assert {t.samples[0]["train"]["precision"] for t in trials} == {"fp32"}  # "auto" (resolve_precision)
    manifest = json.loads((out / "models" / "manifest.json").read_text())
    assert manifest["models"], manifest
    for m in manifest["models"]:
        assert m["trained_on"]["device"] == "cuda:0"
        assert (out / "models" / m["file"]).exists()
        assert m["parity"]["max_abs_diff"] is not None  # the CPU copy matched onnxruntime
