"""Contract every built-in objective passes: a direction, a unit, a finite value on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch.nn as nn

from nago_spec.objectives import OBJECTIVES, EvalContext
from nago_spec.pipeline import DataShape, sample_architecture
from nago_spec.spec import load_spec


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import TINY_SPEC
    from nago_spec.network import Normalize, build_network
    from nago_spec.train import train
    from runners.worker import load_data

    path = tmp_path_factory.mktemp("o") / "tiny.toml"
    path.write_text(TINY_SPEC)
    spec = load_spec(path)
    data = load_data(str(path))
    params = {"top.nodes": 3, "top.p": 0.5, "mid.nodes": 1, "bottom.p": 0.5}
    arch = sample_architecture(spec, params, 7, DataShape.of(data))
    model = nn.Sequential(Normalize(data.mean, data.std), build_network(arch, 7))
    result = train(model, data, epochs=0.5, batch_size=64, lr=0.1, seed=7)
    return EvalContext(params=params, seed=7, architecture=arch, model=model, data=data, train_result=result)


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_builtin_objective_contract(name, trained):
    obj = OBJECTIVES.get(name)
    assert obj.name == name and obj.direction in ("minimize", "maximize") and obj.unit and obj.doc
    ctx = trained
    if obj.cheap:  # cheap objectives need no training: the context has no model
        ctx = EvalContext(params=trained.params, seed=trained.seed, architecture=trained.architecture)
    value = obj.compute(ctx)
    assert isinstance(value, float) and math.isfinite(value)


def test_params_objective_is_the_torch_count(trained):
    assert OBJECTIVES.get("params").compute(trained) == sum(p.numel() for p in trained.model.parameters())
