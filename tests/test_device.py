"""Training on GPUs (issue 19), every rule checked here on the CPU: the device a spec asks for against
what torch sees, workers bound to GPUs (simulated machines of 1, 2 and 4 GPUs), Ray's GPU ids, the
precision per device, the data-on-device training path with device = "cpu", and an out-of-memory
error failing its trial only. tests/test_gpu.py runs the same paths on a real GPU."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
import weakref

import pytest
import torch
from torch import nn

from nago_spec import train as train_mod
from nago_spec.data import load_dataset
from nago_spec.device import (
    SHARED_MEMORY_SHARE,
    Binding,
    DeviceError,
    Machine,
    Placement,
    default_workers,
    local_binding,
    memory_share,
    ray_device,
    resolve_device,
    resolve_precision,
    visible_entries,
    worker_bindings,
)
from nago_spec.errors import TrialError
from nago_spec.spec import load_spec
from nago_spec.store import Store, TrialState
from nago_spec.train import Augment, on_device, train
from nago_spec.runners import worker
from nago_spec.runners.backends import ProcessBackend
from nago_spec.runners.cli import main
from nago_spec.runners.run import RunOptions, placement_of, run

CPU_ONLY = Machine()
CPU_CUDA_BUILD = Machine(cuda_built=True)


def gpus(n: int, env: str | None = None, bf16: bool = True) -> Machine:
    """A simulated machine with ``n`` visible GPUs (``env``: its CUDA_VISIBLE_DEVICES)."""
    return Machine(visible_entries(n, env), ("NVIDIA H200",) * n, bf16, False, True)


# -- the device a spec asks for ---------------------------------------------------------------------


def test_auto_takes_every_gpu_torch_sees_else_the_cpu():
    assert resolve_device("auto", CPU_ONLY) == Placement("cpu")
    assert resolve_device("auto", gpus(2)) == Placement("cuda", ("0", "1"), (0, 1))
    assert resolve_device("cuda", gpus(4)).gpus == ("0", "1", "2", "3")
    assert resolve_device("cpu", gpus(4)) == Placement("cpu")


def test_cuda_n_is_the_nth_gpu_torch_sees_after_cuda_visible_devices():
    m = gpus(2, env="2,3")
    assert m.gpus == ("2", "3")
    assert resolve_device("cuda:1", m) == Placement("cuda", ("3",), (1,))
    uuids = gpus(2, env="GPU-aa11, GPU-bb22 ,GPU-cc33")  # torch sees 2 of the 3 listed: the first two
    assert resolve_device("cuda", uuids).gpus == ("GPU-aa11", "GPU-bb22")


@pytest.mark.parametrize(("requested", "m", "message"), [
    ("cuda", CPU_ONLY, "this machine has no CUDA GPU: torch is a CPU-only build (no CUDA)"),
    ("cuda:0", CPU_CUDA_BUILD, "this machine has no CUDA GPU: torch sees no CUDA GPU"),
    ("cuda:2", gpus(2), "there is no GPU 2: torch sees 2 CUDA GPU(s) (NVIDIA H200), numbered 0 to 1"),
    ("mps", CPU_ONLY, "this machine has no MPS device; torch is a CPU-only build (no CUDA)"),
    ("tpu", CPU_ONLY, 'must be "auto", "cpu", "cuda", "cuda:N" or "mps"'),
    ("cpu:1", CPU_ONLY, 'must be "auto", "cpu", "cuda", "cuda:N" or "mps"'),
])
def test_a_device_the_machine_lacks_says_what_torch_sees(requested, m, message):
    with pytest.raises(DeviceError) as err:
        resolve_device(requested, m)
    assert str(err.value).startswith(message)


def test_mps_only_when_asked_for():
    m = Machine(mps=True)
    assert resolve_device("auto", m) == Placement("cpu")
    assert resolve_device("mps", m) == Placement("mps")


# -- workers on GPUs --------------------------------------------------------------------------------


@pytest.mark.parametrize("n_gpus", [1, 2, 4])
@pytest.mark.parametrize("per_device", [1, 2, 3])
def test_each_gpu_gets_workers_per_device_workers_each_seeing_only_its_own(n_gpus, per_device):
    placement = resolve_device("auto", gpus(n_gpus))
    workers = default_workers(placement, per_device, cores=2)
    assert workers == n_gpus * per_device  # not the cores
    bindings = worker_bindings(placement, workers)
    assert [b.visible for b in bindings] == [str(i % n_gpus) for i in range(workers)]  # spread before stacking
    assert all(b.device == "cuda:0" for b in bindings)  # inside the worker its GPU is the only one
    assert sorted(b.label for b in bindings) == sorted(f"cuda:{g}" for g in range(n_gpus) for _ in range(per_device))
    share = None if per_device == 1 else SHARED_MEMORY_SHARE / per_device
    assert {b.memory_share for b in bindings} == {share}


def test_a_cuda_visible_devices_subset_is_respected():
    m = gpus(3, env="4,6,7")
    bindings = worker_bindings(resolve_device("cuda", m), 6)
    assert [b.visible for b in bindings] == ["4", "6", "7", "4", "6", "7"]
    one = worker_bindings(resolve_device("cuda:2", m), 2)
    assert [(b.visible, b.label, b.memory_share) for b in one] == [("7", "cuda:7", 0.45), ("7", "cuda:7", 0.45)]
    # the local backend trains in the parent process: its GPU keeps the parent's numbering
    assert local_binding(resolve_device("cuda:2", m)) == Binding("cuda:2", None, None, "7")


def test_cpu_workers_keep_the_parent_s_view_and_default_to_one_per_core():
    placement = resolve_device("cpu", gpus(2))
    assert default_workers(placement, 3, cores=2) == 2
    assert worker_bindings(placement, 2) == [Binding("cpu"), Binding("cpu")]
    assert memory_share(4, 4) is None and memory_share(3, 2) == SHARED_MEMORY_SHARE / 2


def visible_and_binding(delay: float) -> tuple[str | None, str, str]:
    time.sleep(delay)  # both workers busy at once: each answers one call
    return os.environ.get("CUDA_VISIBLE_DEVICES"), worker.binding().device, worker.binding().label


def test_process_workers_start_bound_and_a_replacement_keeps_its_slot_s_gpu():
    """Real spawned workers on a simulated 2-GPU machine: each sees only its GPU from its start, and a
    worker that dies is replaced by one bound to the same GPU."""
    bindings = worker_bindings(resolve_device("auto", gpus(2, env="3,5")), 2)
    with ProcessBackend(bindings=bindings) as pool:
        assert pool.workers == 2
        expected = {("3", "cuda:0", "cuda:3"), ("5", "cuda:0", "cuda:5")}
        assert {f.result(timeout=120) for f in [pool.submit(visible_and_binding, 1.0) for _ in range(2)]} == expected
        dead = pool._pool[1].process
        dead.kill()
        dead.join()
        deadline = time.monotonic() + 120
        while (pool._pool[1].process is dead or not pool._pool[1].ready) and time.monotonic() < deadline:
            time.sleep(0.1)  # the dispatcher replaces it; wait until the new one is ready
        assert {f.result(timeout=120) for f in [pool.submit(visible_and_binding, 1.0) for _ in range(2)]} == expected


# -- Ray --------------------------------------------------------------------------------------------


def test_ray_gpu_ids_map_to_the_trial_s_device():
    assert ray_device([], None) == "cpu"  # num_gpus = 0
    assert ray_device([3], None) == "cuda:0"  # Ray set CUDA_VISIBLE_DEVICES=3 before CUDA started
    assert ray_device([2, 3], None) == "cuda:0"
    # a reused worker whose CUDA started under an earlier task keeps that view
    assert ray_device([3], ("1", "3")) == "cuda:1"
    assert ray_device(["GPU-bb22"], ("GPU-aa11", "GPU-bb22")) == "cuda:1"
    with pytest.raises(DeviceError, match=r"Ray assigned GPU 4, but this worker's CUDA was initialised seeing only \[1, 3\]"):
        ray_device([4], ("1", "3"))


def test_ray_tasks_train_on_the_gpu_ray_assigns(tmp_path):
    """A local Ray instance told it has 2 GPUs assigns each half-GPU task one of them; the task's
    binding is that GPU, its memory capped at its share."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'nago-spec[ray]')")
    import ray.cloudpickle

    from nago_spec.runners.backends import RayBackend

    if ray.is_initialized():
        pytest.skip("a Ray instance of another test is still up; this test needs its own with 2 GPUs")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        backend = RayBackend(None, num_cpus=0.5, num_gpus=0.5)
        assert backend.workers == 4  # min(2 CPUs / 0.5, 2 GPUs / 0.5)
        got = [f.result(timeout=120) for f in [backend.submit(ray_binding) for _ in range(4)]]
        assert {(device, share) for device, _, share in got} == {("cuda:0", 0.45)}
        assert {label for _, label, _ in got} <= {"cuda:0", "cuda:1"}
        cpu = RayBackend(None, num_cpus=0.5, num_gpus=0.5, use_gpu=False)  # [run].device = "cpu"
        assert cpu.submit(ray_binding).result(timeout=120)[0] == "cpu"
        with pytest.raises(Exception, match=r"\[run\]\.num_gpus = 3: the Ray cluster has 2 GPU\(s\)"):
            RayBackend(None, num_gpus=3)
    finally:
        ray.shutdown()


def ray_binding() -> tuple[str, str, float | None]:
    b = worker.binding()
    return b.device, b.label, b.memory_share


# -- the spec, check and run refuse what the machine lacks -------------------------------------------


def _spec(tmp_path, tiny_spec, extra: str, name: str = "dev.toml"):
    path = tmp_path / name
    path.write_text(tiny_spec.read_text().replace('[run]\nbackend = "local"\n', extra))
    return path


@pytest.mark.parametrize(("run_section", "train_keys", "pattern"), [
    ('backend = "process"\ndevice = "cuda"', "", r'\[run\]\.device = "cuda": this machine has no CUDA GPU: torch '),
    ('backend = "local"\ndevice = "cuda:1"', "", r'\[run\]\.device = "cuda:1": this machine has no CUDA GPU'),
    ('device = "gpu"', "", r'\[run\]\.device = "gpu": must be "auto"'),
    ("device = 0", "", r'\[run\]\.device = 0: must be "auto"'),
    ("workers_per_device = 0", "", r"\[run\]\.workers_per_device = 0"),
    ('backend = "local"', 'precision = "fp16"', r'\[train\]\.precision = "fp16": fp16 training needs a CUDA GPU'),
    ('backend = "local"', 'precision = "half"', r'\[train\]\.precision = "half": unknown precision'),
    ('backend = "ray"\ndevice = "cuda"', "", r'\[run\]\.device = "cuda": on Ray a trial trains on the GPU it claims'),
    ('backend = "ray"\ndevice = "cuda:0"\nnum_gpus = 1', "", r'\[run\]\.device = "cuda:0": on Ray a trial trains on '
     "the GPU Ray assigns"),
])
@pytest.mark.parametrize("command", ["check", "run"])
def test_a_device_the_machine_lacks_is_one_line_and_exit_2_before_any_trial(run_section, train_keys, pattern, command,
                                                                             tmp_path, tiny_spec, capsys):
    path = _spec(tmp_path, tiny_spec, f"[run]\n{run_section}\n")
    path.write_text(path.read_text().replace("[train]\n", f"[train]\n{train_keys}\n", 1))
    out = tmp_path / "run"
    args = ["run", str(path), "--out", str(out), "--progress", "quiet"] if command == "run" else ["check", str(path)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{path}: "), err
    assert re.search(pattern, err[0]), err[0]
    assert not out.exists()


def test_ray_auto_trains_on_the_gpu_a_trial_claims(tmp_path, tiny_spec):
    claims = load_spec(_spec(tmp_path, tiny_spec, '[run]\nbackend = "ray"\nnum_gpus = 0.25\n'))
    assert placement_of(claims, m=CPU_ONLY).kind == "cuda"  # the cluster's GPUs, not this machine's
    none = load_spec(_spec(tmp_path, tiny_spec, '[run]\nbackend = "ray"\n', "b.toml"))
    assert placement_of(none, m=gpus(2)).kind == "cpu"


def test_check_shows_the_devices_a_run_will_use(tmp_path, tiny_spec, capsys, monkeypatch):
    path = _spec(tmp_path, tiny_spec, '[run]\nbackend = "process"\nworkers_per_device = 2\n')
    assert main(["check", "--json", str(path)]) == 0
    r = json.loads(capsys.readouterr().out)["run"]
    assert (r["device"], r["resolved"], r["precision"], r["workers"]) == ("auto", "cpu", "fp32", os.cpu_count())
    monkeypatch.setattr("nago_spec.device.machine", lambda: gpus(2, env="1,3"))
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "run: process x 4" in out
    assert "device: cuda, GPUs 1, 3; worker GPUs: 1, 3, 1, 3 ([run].device = 'auto'; torch sees 2 CUDA GPU(s) " \
           "(NVIDIA H200)); precision fp32" in out


def test_default_precision_and_determinism_leave_old_runs_resumable(tmp_path, tiny_spec):
    spec = load_spec(tiny_spec)
    assert "precision" not in spec.search_dict()["train"] and "deterministic" not in spec.search_dict()["train"]
    bf16 = load_spec(tiny_spec, {"train": {"precision": "bf16"}})
    assert bf16.search_dict()["train"]["precision"] == "bf16" and bf16.key() != spec.key()


# -- precision -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("precision", "device", "bf16", "expected"), [
    ("auto", "cpu", False, "fp32"),
    ("auto", "cuda:0", True, "fp32"),  # bf16 autocast measured slower on an H200 (resolve_precision)
    ("auto", "cuda:0", False, "fp32"),  # a GPU without bf16 (before Ampere)
    ("auto", "mps", False, "fp32"),
    ("fp32", "cuda:0", True, "fp32"),
    ("bf16", "cpu", False, "bf16"),  # opt-in on the CPU
    ("fp16", "cuda:1", False, "fp16"),
])
def test_the_precision_each_device_trains_in(precision, device, bf16, expected):
    assert resolve_precision(precision, device, bf16) == expected


@pytest.mark.parametrize(("precision", "device", "message"), [
    ("fp16", "cpu", "fp16 training needs a CUDA GPU"),
    ("bf16", "cuda:0", "this GPU (cuda:0) does not support bf16"),
    ("bf16", "mps", "bf16 autocast is not supported on MPS"),
])
def test_a_precision_the_device_cannot_run(precision, device, message):
    with pytest.raises(DeviceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_precision(precision, device, False)


# -- the training path, on the CPU -----------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", val_fraction=0.2, seed=0)


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 10))


def test_an_explicit_cpu_device_is_the_default_path_bit_for_bit(digits):
    aug = Augment(crop_padding=1, flip=True, cutout=2, fill=(3.0,))
    a, b = small_cnn(), small_cnn()
    ra = train(a, digits, epochs=1, batch_size=64, lr=0.05, seed=3, augment=aug)
    rb = train(b, on_device(digits, "cpu"), epochs=1, batch_size=64, lr=0.05, seed=3, augment=aug, device="cpu",
               precision="auto", deterministic=True)
    assert on_device(digits, "cpu") is digits  # nothing copied
    assert (ra.val_accuracy, ra.train_loss, ra.steps) == (rb.val_accuracy, rb.train_loss, rb.steps)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert (rb.device, rb.precision) == ("cpu", "fp32")
    assert not torch.are_deterministic_algorithms_enabled()  # restored


def test_bf16_autocast_trains_on_the_cpu_and_validates_in_fp32(digits):
    from nago_spec.network import Normalize

    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(Normalize(digits.mean, digits.std), nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16),
                             nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 10))

    fp32 = train(net(), digits, epochs=2, batch_size=64, lr=0.05, seed=0)
    bf16 = train(net(), digits, epochs=2, batch_size=64, lr=0.05, seed=0, precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert bf16.train_loss != fp32.train_loss  # autocast ran the convs and the linear layer in bf16
    assert bf16.val_accuracy > 0.85 and abs(bf16.val_accuracy - fp32.val_accuracy) < 0.03
    with pytest.raises(DeviceError, match="fp16 training needs a CUDA GPU"):
        train(small_cnn(), digits, epochs=1, batch_size=64, lr=0.1, seed=0, precision="fp16")


def test_the_nan_guard_names_the_first_bad_step_when_losses_are_checked_in_batches(digits, monkeypatch):
    """On a GPU the losses come to the host every LOSS_CHECK_EVERY steps; the step named is still the
    first non-finite one (simulated on the CPU with a check every 7 steps)."""

    class NaNAfter(nn.Module):
        def __init__(self, good: int):
            super().__init__()
            torch.manual_seed(0)
            self.fc, self.calls, self.good = nn.Linear(64, 10), 0, good

        def forward(self, x):
            self.calls += 1 if self.training else 0
            out = self.fc(x.flatten(1) / 255)
            return out * float("nan") if self.training and self.calls > self.good else out

    every_step = train(NaNAfter(10**6), digits, epochs=1.5, batch_size=64, lr=0.05, seed=0)
    monkeypatch.setattr(train_mod, "_loss_check_every", lambda dev: 7)
    with pytest.raises(TrialError, match=r"^non-finite training loss at step 10 \(epoch 1\)$"):
        train(NaNAfter(9), digits, epochs=1, batch_size=64, lr=0.05, seed=0)
    batched = train(NaNAfter(10**6), digits, epochs=1.5, batch_size=64, lr=0.05, seed=0)
    assert batched.steps % 7 != 0  # the last losses are checked after the loop
    assert (batched.steps, batched.train_loss) == (every_step.steps, every_step.train_loss)


def test_augmentation_draws_on_the_batch_s_device(digits):
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = Augment(crop_padding=2, flip=True, cutout=3, fill=(9.0,))(digits.x_train[:16], gen)
    assert x.device.type == "cpu" and x.dtype == torch.float32 and x.shape == digits.x_train[:16].shape


# -- out of memory ---------------------------------------------------------------------------------


def test_an_out_of_memory_error_fails_its_trial_frees_memory_and_the_run_goes_on(tmp_path, tiny_spec, monkeypatch):
    """Trial 1's training raises torch's OutOfMemoryError (what a GPU raises); it is FAILED with the
    device and torch's message, the memory is given back, and the other trials complete."""
    import nago_spec.pipeline as pipeline

    real_fit = pipeline.fit
    failed_model: list[weakref.ref] = []
    freed: list[tuple[str, bool]] = []

    def fit(model, data, t, seed, device="cpu"):
        from nago_spec.seeds import sample_seed

        if seed == sample_seed(0, 1, 0):
            failed_model.append(weakref.ref(model))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.19 GiB total)")
        return real_fit(model, data, t, seed, device)

    def free_memory(device):  # the real one, noting whether the failed trial's model was garbage by then
        real_free(device)
        freed.append((device, failed_model[-1]() is None))

    real_free = worker.free_memory
    monkeypatch.setattr(pipeline, "fit", fit)
    monkeypatch.setattr(worker, "free_memory", free_memory)
    spec = _spec(tmp_path, tiny_spec, '[run]\nbackend = "local"\n')
    spec.write_text(spec.read_text().replace("[export]\n", "[export]\nonnx = false\n"))
    out = tmp_path / "run"
    run(spec, RunOptions(out=out, mode="quiet"))
    with Store(out / "study.db") as store:
        trials = store.trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAILED, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].error == "out of memory on cpu: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.19 GiB total)"
    assert freed == [("cpu", True)]  # freed once nothing held the failed model any more
    assert {(t.host, t.device) for t in trials} == {(socket.gethostname(), "cpu")}  # the worker's own
    assert trials[0].samples[0]["train"]["device"] == "cpu"


def test_a_simulated_gpu_worker_binding_labels_its_trials(tmp_path, tiny_spec, monkeypatch):
    """evaluate_trial records the binding's label (the machine's GPU id), not the process's cuda:0."""
    monkeypatch.setattr(worker, "_BINDING", Binding("cpu", None, None, None))
    spec = _spec(tmp_path, tiny_spec, '[run]\nbackend = "local"\n')
    params = {"top.nodes": 3, "top.p": 0.5, "mid.nodes": 1, "bottom.p": 0.5}
    assert worker.evaluate_trial(load_spec(spec), None, 0, params).device == "cpu"
    monkeypatch.setattr(worker, "_BINDING", Binding("cpu", None, None, "GPU-5f2c"))
    assert worker.evaluate_trial(load_spec(spec), None, 0, params).device == "cuda:GPU-5f2c"



def test_a_run_s_parent_counts_the_gpus_without_starting_cuda(tmp_path, tiny_spec, monkeypatch):
    """The parent of GPU workers must not hold a CUDA context: it counts the GPUs (NVML) and asks
    their names and bf16 support only for `nago check` or an explicit bf16."""

    def starts_cuda(*args):
        raise AssertionError("this would start CUDA in the parent")

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", starts_cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", starts_cuda)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6,7")
    spec = load_spec(_spec(tmp_path, tiny_spec, '[run]\nbackend = "process"\n'))
    assert placement_of(spec) == Placement("cuda", ("6", "7"), (0, 1), "fp32")
    with pytest.raises(AssertionError, match="would start CUDA"):
        placement_of(load_spec(tiny_spec, {"train": {"precision": "bf16"}, "run": {"backend": "process"}}))
