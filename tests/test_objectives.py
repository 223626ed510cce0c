"""Contract every built-in objective passes (a direction, a unit, a finite value on a tiny model), the
counts against torch, the final-only test error, and plug-ins from real entry points."""

from __future__ import annotations

import math
import sys
import textwrap

import pytest
import torch
from torch import nn

from conftest import install_plugin

from nago_spec.errors import RegistryError, SpecError
from nago_spec.objectives import (
    BYTES_PER_VALUE,
    MIB,
    OBJECTIVES,
    EvalContext,
    Objective,
    peak_activation_bytes,
)
from nago_spec.pipeline import DataShape, sample_architecture
from nago_spec.spec import load_spec

SHAPE = DataShape(1, (8, 8), 10)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import TINY_SPEC

    from nago_spec.network import Normalize, build_network
    from nago_spec.train import train
    from nago_spec.runners.worker import load_data

    path = tmp_path_factory.mktemp("o") / "tiny.toml"
    path.write_text(TINY_SPEC)
    spec = load_spec(path)
    data = load_data(spec)
    params = {"top.nodes": 3, "top.p": 0.5, "mid.nodes": 1, "bottom.p": 0.5}
    arch = sample_architecture(spec, params, 7, DataShape.of(data))
    model = nn.Sequential(Normalize(data.mean, data.std), build_network(arch, 7))
    result = train(model, data, epochs=1, batch_size=64, lr=0.1, seed=7)
    return EvalContext(params=params, seed=7, architecture=arch, model=model, data=data, train_result=result)


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_builtin_objective_contract(name, trained):
    obj = OBJECTIVES.get(name)
    assert obj.name == name and obj.direction in ("minimize", "maximize") and obj.unit and obj.doc
    ctx = EvalContext(params=trained.params, seed=trained.seed, architecture=trained.architecture,
                      model=trained.model, data=trained.data, train_result=trained.train_result)
    if obj.cheap:  # cheap objectives need no training: the context has no model
        ctx = EvalContext(params=trained.params, seed=trained.seed, architecture=trained.architecture)
    value = obj.compute(ctx)
    assert isinstance(value, float) and math.isfinite(value)


def test_params_objective_is_the_torch_count(trained):
    assert OBJECTIVES.get("params").compute(trained) == sum(p.numel() for p in trained.model.parameters())


def test_memory_is_float32_parameter_bytes_in_mib(trained):
    n = sum(p.numel() for p in trained.model.parameters())
    assert OBJECTIVES.get("memory_mb").compute(trained) == n * BYTES_PER_VALUE / MIB == n * 4 / 2**20


def test_accuracy_error_and_train_seconds_come_from_the_train_result(trained):
    r = trained.train_result
    assert OBJECTIVES.get("accuracy").compute(trained) == r.val_accuracy
    assert OBJECTIVES.get("error").compute(trained) == pytest.approx(1 - r.val_accuracy)
    assert OBJECTIVES.get("train_seconds").compute(trained) == r.seconds


def _sampled_architectures(tiny_spec, n: int):
    from nago_spec.pipeline import build_space

    spec = load_spec(tiny_spec)
    space = build_space(spec)
    return [sample_architecture(spec, space.from_unit(u), i, SHAPE) for i, u in enumerate(space.sobol(n, seed=1))]


def test_flops_is_the_torch_mac_count_of_sampled_architectures(tiny_spec):
    from test_network import hooked_macs

    from nago_spec.network import build_network

    for arch in _sampled_architectures(tiny_spec, 24):
        net = build_network(arch, 0).eval()
        ctx = EvalContext(params={}, seed=0, architecture=arch)
        assert OBJECTIVES.get("flops").compute(ctx) == hooked_macs(net, torch.zeros(1, 1, 8, 8))


def test_flop_counter_mode_counts_two_flops_per_mac(tiny_spec):
    """torch's FlopCounterMode counts a multiply-accumulate of a conv or matmul as 2 FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    from nago_spec.network import build_network

    for arch in _sampled_architectures(tiny_spec, 4):
        net = build_network(arch, 0).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(torch.zeros(1, 1, 8, 8))
        macs = OBJECTIVES.get("flops").compute(EvalContext(params={}, seed=0, architecture=arch))
        assert counter.get_total_flops() == 2 * macs


def test_peak_activation_counts_live_tensors_by_hand():
    x = torch.zeros(1, 3, 8, 8)  # 768 bytes, alive throughout; each 8-channel map is 2048 bytes
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert peak_activation_bytes(nn.Sequential(conv, nn.ReLU()), x) == 768 + 2048 + 2048
    assert peak_activation_bytes(nn.Sequential(conv, nn.ReLU(inplace=True)), x) == 768 + 2048  # in place: no new map
    # the conv output dies once the ReLU output exists: three maps never coexist
    assert peak_activation_bytes(nn.Sequential(conv, nn.ReLU(), nn.ReLU()), x) == 768 + 2048 + 2048


def test_peak_activation_is_deterministic_and_bounded(tiny_spec):
    from nago_spec.network import build_network

    for arch in _sampled_architectures(tiny_spec, 3):
        ctx = EvalContext(params={}, seed=0, architecture=arch)
        value = OBJECTIVES.get("peak_activation_mb").compute(ctx)
        assert value == OBJECTIVES.get("peak_activation_mb").compute(ctx)
        sizes = []
        net = build_network(arch, 0).eval()
        hooks = [m.register_forward_hook(lambda _m, _i, out, sizes=sizes: sizes.append(out.numel() * 4))
                 for m in net.modules() if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            net(torch.zeros(1, 1, 8, 8))
        for h in hooks:
            h.remove()
        assert (256 + max(sizes)) / MIB <= value  # the input and the largest conv output at least


def test_latency_records_its_spread(trained):
    ctx = EvalContext(params=trained.params, seed=trained.seed, architecture=trained.architecture,
                      model=trained.model)
    median = OBJECTIVES.get("latency_ms").compute(ctx)
    spread = ctx.extra["latency_ms"]
    assert spread["p10"] <= median <= spread["p90"] and spread["runs"] == 30 and median > 0


def _spec_with(tmp_path, objectives: str, constraints: str = ""):
    from conftest import TINY_SPEC

    text = TINY_SPEC.replace('[[objectives]]\nname = "error"\n[[objectives]]\nname = "params"\n',
                             textwrap.dedent(objectives) + textwrap.dedent(constraints))
    path = tmp_path / "s.toml"
    path.write_text(text)
    return load_spec(path)


def test_test_error_is_refused_for_the_search(tmp_path):
    assert OBJECTIVES.get("test_error").final_only
    with pytest.raises(SpecError, match=r"\[objectives\]\[1\]\.name.*'test_error' is available in final reports only"):
        _spec_with(tmp_path, '[[objectives]]\nname = "error"\n[[objectives]]\nname = "test_error"\n')
    with pytest.raises(SpecError, match=r"\[constraints\]\[0\]\.objective.*'test_error' is available in final reports"):
        _spec_with(tmp_path, '[[objectives]]\nname = "error"\n',
                   '[[constraints]]\nobjective = "test_error"\nmax = 0.5\n')


def test_new_builtins_are_accepted_in_specs_with_their_cost(tmp_path):
    spec = _spec_with(tmp_path, "".join(f'[[objectives]]\nname = "{n}"\n' for n in
                                        ("accuracy", "flops", "memory_mb", "peak_activation_mb", "latency_ms")))
    assert {o.name: (o.direction, o.cheap) for o in spec.objectives} == {
        "accuracy": ("maximize", False), "flops": ("minimize", True), "memory_mb": ("minimize", True),
        "peak_activation_mb": ("minimize", True), "latency_ms": ("minimize", False)}


# --- plug-ins through the nago_spec.objectives entry points ---------------------------------------------


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """A real installed distribution on sys.path: a module and a dist-info with entry_points.txt."""
    install_plugin(tmp_path, monkeypatch, "nago_plug_example", """
        from nago_spec.objectives import Objective

        def half_params(params, ctx):
            '''Half the parameter count.'''
            return ctx.architecture.param_count() / 2
        half_params.cheap = True
        half_params.unit = "count"

        as_object = Objective("as_object", "maximize", "score", True, lambda ctx: 1.0, "a constant")
        """,
                   "[nago_spec.objectives]\n"
                   "half_params = nago_plug_example:half_params\n"
                   "as_object = nago_plug_example:as_object\n"
                   "broken = nago_plug_example_missing:thing\n",
                   (OBJECTIVES,))
    yield tmp_path
    sys.modules.pop("nago_plug_example", None)


def test_plugins_load_lazily_from_entry_points(plugin_dist, tiny_spec):
    assert "half_params" not in OBJECTIVES.names()  # nothing loaded before a look-up misses
    half = OBJECTIVES.get("half_params")
    assert (half.direction, half.unit, half.cheap, half.doc) == ("minimize", "count", True, "Half the parameter count.")
    assert isinstance(OBJECTIVES.get("as_object"), Objective) and OBJECTIVES.get("as_object").direction == "maximize"
    arch = _sampled_architectures(tiny_spec, 1)[0]
    assert half.compute(EvalContext(params={}, seed=0, architecture=arch)) == arch.param_count() / 2


def test_a_broken_plugin_is_named_in_the_error(plugin_dist):
    with pytest.raises(RegistryError, match=r"objective plug-in 'broken' \(nago_plug_example_missing:thing, "
                                            r"distribution nago-plug-example\) failed to load: ModuleNotFoundError"):
        OBJECTIVES.get("broken")
    assert OBJECTIVES.get("half_params").cheap  # the others still load


def test_specs_use_plugins_like_builtins(plugin_dist, tmp_path):
    spec = _spec_with(tmp_path, '[[objectives]]\nname = "error"\n[[objectives]]\nname = "half_params"\n',
                      '[[constraints]]\nobjective = "as_object"\nmin = 0.5\n')
    assert [(o.name, o.cheap) for o in spec.objectives] == [("error", False), ("half_params", True)]
    with pytest.raises(SpecError, match="objective plug-in 'broken'.*failed to load"):
        _spec_with(tmp_path, '[[objectives]]\nname = "broken"\n')
