"""Tests of nago_spec.spec: loading, every validation rule, overrides, freezing, the TOML round trip."""

from __future__ import annotations

import dataclasses
import pickle
import re
from pathlib import Path

import pytest

from nago_spec.errors import SpecError
from nago_spec.registry import BACKENDS, DATASETS, STRATEGIES
from nago_spec.problem import ConstraintInfo, ObjectiveInfo
from nago_spec.spec import (
    FrozenMap,
    ParamSpec,
    Range,
    Spec,
    dump_toml,
    load_spec,
)

REPO_SPECS = sorted((Path(__file__).resolve().parents[1] / "specs").glob("*.toml"))

# The two examples of DESIGN.md ("The spec file"), verbatim but for version = 1 on the second.
NETWORK_EXAMPLE = """\
version = 1
name = "quickstart"
seed = 0

[data]
dataset = "digits"          # digits (ships with scikit-learn) | idx | npz | image-folder
# path = "../shared/data/fashion-mnist"
val_fraction = 0.2          # validation is carved from the training split, never the test split

[space]
kind = "hnag"               # hnag | rnag | params
param_budget = 20000        # channel width from a parameter budget (NAGO.md §1.6)
stage_ratios = [0.34, 0.33, 0.33]
channel_ratios = [1, 2, 4]

[space.top]                 # a [low, high] pair is searched; a scalar is fixed
graph = "ws"
nodes = [3, 6]
k = [2, 4]
p = [0.1, 0.9]
[space.mid]
graph = "er"
nodes = [1, 4]
p = [0.1, 0.9]
[space.bottom]
graph = "ws"
nodes = [3, 6]
k = [2, 4]
p = [0.1, 0.9]

[train]
epochs = 2
batch_size = 128
lr = 0.05
samples_per_point = 1       # architectures sampled and trained per generator point

[[objectives]]
name = "error"              # built-in; direction is known
[[objectives]]
name = "params"

[[constraints]]
objective = "params"
max = 50000

[search]
strategy = "bo"             # bo | evolution | random
budget = 20                 # evaluations
initial = 8
batch = 2

[run]
backend = "process"         # local | process | ray
workers = 2

[export]
onnx = true
final_epochs = 5
"""

PARAMS_EXAMPLE = """\
version = 1
[space]
kind = "params"
[space.params]
x1 = { type = "float", low = 0.0, high = 1.0 }
depth = { type = "int", low = 1, high = 8 }
act = { type = "categorical", choices = ["relu", "gelu"] }
lr = { type = "float", low = 1e-4, high = 1e-1, log = true }

[[objectives]]
name = "f1"
callable = "problems.py:zdt"   # FILE.py:function relative to the spec file, or module:function
direction = "minimize"
[[objectives]]
name = "f2"
callable = "problems.py:zdt"   # objectives naming the same callable share one call per trial
direction = "minimize"
"""

PROBLEMS_PY = """\
def zdt(params):
    f1 = params["x1"]
    return {"f1": f1, "f2": 1.0 - f1 ** 0.5}


def energy(params):
    return 1.0


ANSWER = 42
"""

MINIMAL = 'version = 1\n[[objectives]]\nname = "error"\n'


def write(directory: Path, text: str, name: str = "spec.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def load_text(tmp_path: Path, text: str, **kw) -> Spec:
    return load_spec(write(tmp_path, text), **kw)


def error_lines(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_text(tmp_path, text)
    return info.value.lines


def expect_error(tmp_path: Path, text: str, line: str) -> None:
    """``line`` is (the end of) one of the spec's error lines, which all start with the file name."""
    path = write(tmp_path, text)
    with pytest.raises(SpecError, match=re.escape(f"{path}: ") + ".*" + re.escape(line)):
        load_spec(path)


@pytest.fixture
def problems(tmp_path: Path) -> Path:
    return write(tmp_path, PROBLEMS_PY, "problems.py")


# --- the DESIGN.md examples ------------------------------------------------------------------------


def test_network_example(tmp_path):
    spec = load_text(tmp_path, NETWORK_EXAMPLE)
    assert spec.path == (tmp_path / "spec.toml").resolve() and spec.path.is_absolute()
    assert (spec.name, spec.version, spec.seed) == ("quickstart", 1, 0)
    assert spec.data.dataset == "digits" and spec.data.path is None and spec.data.val_fraction == 0.2
    s = spec.space
    assert s.kind == "hnag" and s.param_budget == 20000 and s.head_width == 1280
    assert s.stage_ratios == (0.34, 0.33, 0.33)
    assert s.channel_ratios == (1.0, 2.0, 4.0) and all(isinstance(c, float) for c in s.channel_ratios)
    assert s.top.graph == "ws" and dict(s.top.params) == {"nodes": Range(3, 6), "k": Range(2, 4), "p": Range(0.1, 0.9)}
    assert s.mid.graph == "er" and dict(s.mid.params) == {"nodes": Range(1, 4), "p": Range(0.1, 0.9)}
    assert s.bottom == s.top and s.params == {}
    assert spec.train.epochs == 2.0 and isinstance(spec.train.epochs, float)
    assert (spec.train.batch_size, spec.train.lr, spec.train.momentum) == (128, 0.05, 0.9)
    assert spec.objectives == (
        ObjectiveInfo("error", "minimize", False),
        ObjectiveInfo("params", "minimize", True),  # a built-in's cost comes from OBJECTIVES
    )
    assert spec.constraints == (ConstraintInfo("params", None, 50000.0),)
    assert (spec.search.strategy, spec.search.budget, spec.search.initial, spec.search.batch) == ("bo", 20, 8, 2)
    assert (spec.run.backend, spec.run.workers) == ("process", 2)
    assert spec.export.onnx and spec.export.final_epochs == 5.0 and spec.export.opset == 20


def test_params_example(tmp_path, problems):
    spec = load_text(tmp_path, PARAMS_EXAMPLE)
    assert spec.name == "spec"  # the file's stem
    assert spec.space.kind == "params"
    assert dict(spec.space.params) == {
        "x1": ParamSpec("float", 0.0, 1.0),
        "depth": ParamSpec("int", 1, 8),
        "act": ParamSpec("categorical", choices=("relu", "gelu")),
        "lr": ParamSpec("float", 1e-4, 1e-1, log=True),
    }
    ref = f"{problems.resolve()}:zdt"
    assert spec.objectives == (ObjectiveInfo("f1", "minimize", callable=ref), ObjectiveInfo("f2", "minimize", callable=ref))
    assert spec.constraints == ()


def test_minimal_spec_takes_every_default(tmp_path):
    spec = load_text(tmp_path, MINIMAL)
    assert spec == Spec(path=spec.path, name="spec", objectives=(ObjectiveInfo("error", "minimize"),))
    assert spec.space.stage_ratios == (1 / 3, 1 / 3, 1 / 3)
    assert dict(spec.space.top.params) == {"nodes": Range(3, 10), "k": Range(2, 5), "p": Range(0.1, 0.9)}
    assert dict(spec.space.mid.params) == {"nodes": Range(1, 10), "p": Range(0.1, 0.9)}
    assert (spec.train.epochs, spec.train.nesterov, spec.train.weight_decay, spec.train.max_seconds) == (
        2.0, True, 5e-4, None)
    assert (spec.run.backend, spec.run.workers, spec.export.max_models) == ("process", None, None)
    assert "digits" in DATASETS and "bo" in STRATEGIES and "local" in BACKENDS


def test_level_values(tmp_path):
    spec = load_text(tmp_path, MINIMAL + """
[space.top]
graph = "ba"
nodes = 5
[space.mid]
p = { low = 0.01, high = 0.5, log = true }
nodes = [2, 2]
""")
    assert spec.space.top.graph == "ba"
    assert dict(spec.space.top.params) == {"nodes": 5, "m": Range(1, 4)}
    assert dict(spec.space.mid.params) == {"nodes": Range(2, 2), "p": Range(0.01, 0.5, log=True)}


def test_channel_ratios_default_follows_stage_count(tmp_path):
    spec = load_text(tmp_path, MINIMAL + "[space]\nstage_ratios = [0.5, 0.5]\n")
    assert spec.space.channel_ratios == (1.0, 2.0)


def test_data_path_resolved_against_the_spec(tmp_path):
    (tmp_path / "fmnist").mkdir()
    sub = tmp_path / "specs"
    sub.mkdir()
    spec = load_spec(write(sub, MINIMAL + '[data]\ndataset = "idx"\npath = "../fmnist"\nlimit = 100\n'
                                          'classes = ["a", "b"]\n'))
    assert spec.data.path == (tmp_path / "fmnist").resolve() and spec.data.path.is_absolute()
    assert (spec.data.limit, spec.data.classes) == (100, ("a", "b"))


def test_callable_objective_options(tmp_path, problems):
    spec = load_text(tmp_path, MINIMAL + """
[[objectives]]
name = "energy"
callable = "problems.py:energy"
cheap = true
[[objectives]]
name = "acc"
callable = "math:fsum"
direction = "maximize"
[[constraints]]
objective = "energy"
min = 0
max = 2
""")
    assert spec.objectives[1:] == (
        ObjectiveInfo("energy", "minimize", True, callable=f"{problems.resolve()}:energy"),
        ObjectiveInfo("acc", "maximize", False, callable="math:fsum"),
    )
    assert spec.constraints == (ConstraintInfo("energy", 0.0, 2.0),)


def test_objective_reference_values(tmp_path, problems):
    spec = load_text(tmp_path, MINIMAL.replace('name = "error"\n', 'name = "error"\nref = 0.5\n') + """
[[objectives]]
name = "acc"
callable = "math:fsum"
direction = "maximize"
ref = 0.25
""")
    assert [o.ref for o in spec.objectives] == [0.5, 0.25]
    assert load_spec(write(tmp_path, dump_toml(spec), "again.toml")).objectives == spec.objectives
    expect_error(tmp_path, MINIMAL + 'ref = "high"\n', '[objectives][0].ref = "high": must be a number')


def test_a_constraint_may_measure_its_own_quantity_with_a_callable(tmp_path, problems):
    text = MINIMAL + """
[[constraints]]
objective = "power"
callable = "problems.py:energy"
cheap = true
max = 2
[[constraints]]
objective = "power"
min = 0.5
"""
    spec = load_text(tmp_path, text)
    ref = f"{problems.resolve()}:energy"
    # the second bound measures "power" as the first does: by its callable, and cheaply
    assert spec.constraints == (ConstraintInfo("power", None, 2.0, ref, True),
                                ConstraintInfo("power", 0.5, None, ref, True))
    assert load_spec(write(tmp_path, dump_toml(spec), "again.toml")).constraints == spec.constraints
    # specs without the keys keep their resolved form (and so their hash)
    assert "callable" not in dump_toml(load_text(tmp_path, MINIMAL + "[[constraints]]\nobjective = \"params\"\nmax = 9\n"))


@pytest.mark.parametrize("entry, line", [
    ('objective = "error"\ncallable = "problems.py:energy"\nmax = 1',
     '[constraints][0].callable = "problems.py:energy": \'error\' is a declared objective'),
    ('objective = "params"\ncheap = true\nmax = 1', "[constraints][0].cheap = true: only allowed with a callable"),
    ('objective = "power"\ncallable = "problems.py:nope"\nmax = 1', '[constraints][0].callable = "problems.py:nope": cannot import'),
])
def test_constraint_callable_errors(tmp_path, problems, entry, line):
    expect_error(tmp_path, MINIMAL + "[[constraints]]\n" + entry + "\n", line)


def test_one_quantity_has_one_callable(tmp_path, problems):
    expect_error(tmp_path, MINIMAL + """
[[constraints]]
objective = "power"
callable = "problems.py:energy"
max = 2
[[constraints]]
objective = "power"
callable = "problems.py:zdt"
min = 0
""", '[constraints][1].callable = "problems.py:zdt": \'power\' is already measured by \'problems.py:energy\'')


# --- errors --------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(SpecError, match=f"^{re.escape(str(path))}: no such file$"):
        load_spec(path)


def test_invalid_toml(tmp_path):
    path = write(tmp_path, "version = 1\n[train\n")
    with pytest.raises(SpecError, match=f"^{re.escape(str(path))}: invalid TOML: ") as info:
        load_spec(path)
    assert len(info.value.lines) == 1


def test_path_shown_as_given(tmp_path, monkeypatch):
    write(tmp_path, "version = 1\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match=r"^spec\.toml: \[\[objectives\]\]: missing"):
        load_spec("spec.toml")


TOP = 'version = 1\n{}\n[[objectives]]\nname = "error"\n'


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('version = 2\n[[objectives]]\nname = "error"\n', "version = 2: only version 1 is supported"),
        ('version = true\n[[objectives]]\nname = "error"\n', "version = true: only version 1 is supported"),
        ('[[objectives]]\nname = "error"\n', "version: missing: every spec must declare version = 1"),
        (TOP.format("seed = -1"), "seed = -1: must be an integer >= 0"),
        (TOP.format("seed = 1.5"), "seed = 1.5: must be an integer >= 0"),
        (TOP.format("seed = true"), "seed = true: must be an integer >= 0"),
        (TOP.format('name = "a/b"'), 'name = "a/b": must be a non-empty name without'),
        (TOP.format('name = ""'), 'name = "": must be a non-empty name'),
        (TOP.format("sede = 1"), "sede = 1: unknown key (did you mean 'seed'?)"),
        (TOP.format("train = 3"), "train = 3: must be a table ([train])"),
        (MINIMAL + "[trian]\nepochs = 1\n", "[trian]: unknown section (did you mean 'train'?)"),
        (MINIMAL + "[export]\nseed = 1\n", "[export].seed = 1: unknown key (seed is a top-level key"),
    ],
)
def test_top_level_errors(tmp_path, text, line):
    expect_error(tmp_path, text, line)


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ('dataset = "cifar"', '[data].dataset = "cifar": unknown dataset; valid: digits, idx, image-folder, npz'),
        ('dataset = "idz"\npath = "d"', "[data].dataset = \"idz\": unknown dataset (did you mean 'idx'?)"),
        ('dataset = "idx"', '[data].path: missing: required with dataset = "idx"'),
        ('path = "d"', '[data].path = "d": not allowed with dataset = "digits"'),
        ('dataset = "idx"\npath = "../nope"', '[data].path = "../nope": no such file or directory'),
        ('dataset = "idx"\npath = "spec.toml"',
         '[data].path = "spec.toml": must be a directory of MNIST-format IDX files with dataset = "idx", but'),
        ('dataset = "npz"\npath = "."',
         '[data].path = ".": must be an .npz file with arrays x and y with dataset = "npz", but'),
        ('dataset = "npz"', '[data].path: missing: required with dataset = "npz" (an .npz file'),
        ('dataset = "image-folder"', '[data].path: missing: required with dataset = "image-folder" (a directory or'),
        ('dataset = "idx"\npath = 3', '[data].path = 3: must be a path'),
        ("val_fraction = 0", "[data].val_fraction = 0: must be > 0 and < 1"),
        ("val_fraction = 1.0", "[data].val_fraction = 1.0: must be > 0 and < 1"),
        ('val_fraction = "a"', '[data].val_fraction = "a": must be a number > 0 and < 1'),
        ("limit = 5", "[data].limit = 5: must be an integer >= 10"),
        ("limit = 100.0", "[data].limit = 100.0: must be an integer >= 10"),
        ("classes = []", "[data].classes = []: must be a non-empty list of class names"),
        ('classes = ["a", "a"]', '[data].classes = ["a", "a"]: class names must be distinct'),
        ("datset = 1", "[data].datset = 1: unknown key (did you mean 'dataset'?)"),
    ],
)
def test_data_errors(tmp_path, body, line):
    (tmp_path / "d").mkdir(exist_ok=True)
    expect_error(tmp_path, MINIMAL + "[data]\n" + body + "\n", line)


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ('kind = "hnga"', "[space].kind = \"hnga\": unknown space kind (did you mean 'hnag'?); valid: hnag, rnag, params"),
        ("param_budget = 0", "[space].param_budget = 0: must be an integer >= 1"),
        ("param_budget = true", "[space].param_budget = true: must be an integer >= 1"),
        ("stage_ratios = []", "[space].stage_ratios = []: must be a list of 1 to 6 numbers > 0 summing to 1, but has 0"),
        ("stage_ratios = [0.5, 0.4]", "[space].stage_ratios = [0.5, 0.4]: must sum to 1, but sums to 0.9"),
        ("stage_ratios = [1.5, -0.5]", "[space].stage_ratios = [1.5, -0.5]: must be a list of 1 to 6 numbers > 0"),
        ("stage_ratios = [0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125]",
         "must be a list of 1 to 6 numbers > 0 summing to 1, but has 8"),
        ("stage_ratios = 1", "[space].stage_ratios = 1: must be a list"),
        ("channel_ratios = [1, 2]", "[space].channel_ratios = [1, 2]: must have one entry per stage, but stage_ratios has 3"),
        ("channel_ratios = [0, 1, 2]", "[space].channel_ratios = [0, 1, 2]: must be a list of numbers > 0"),
        ("head_width = -1", "[space].head_width = -1: must be an integer >= 0"),
        ('share_graphs = "yes"', '[space].share_graphs = "yes": must be true or false'),
        ("top = 3", "[space].top = 3: must be a table ([space.top])"),
        ("[space.tpo]\nnodes = 3", "[space.tpo]: unknown section (did you mean 'space.top'?)"),
        ('kind = "params"', '[space.params]: missing: kind = "params" needs a non-empty [space.params] table'),
        ('kind = "params"\nparam_budget = 10\n[space.params]\nx = { type = "int", low = 1, high = 2 }',
         '[space].param_budget = 10: only allowed with kind = "hnag"'),
        ('kind = "params"\n[space.top]\nnodes = 3\n[space.params]\nx = { type = "int", low = 1, high = 2 }',
         '[space.top]: only allowed with kind = "hnag"'),
        ('[space.params]\nx = { type = "int", low = 1, high = 2 }', '[space.params]: only allowed with kind = "params"'),
    ],
)
def test_space_errors(tmp_path, body, line):
    expect_error(tmp_path, MINIMAL + "[space]\n" + body + "\n", line)


@pytest.mark.parametrize(
    ("level", "body", "line"),
    [
        ("top", 'graph = "wss"', "[space.top].graph = \"wss\": unknown graph model (did you mean 'ws'?); valid: ba, er, ws"),
        ("top", "graph = 1", "[space.top].graph = 1: must be a string naming a graph model"),
        ("top", "node = 3", "[space.top].node = 3: unknown key (did you mean 'nodes'?) (graph 'ws' takes: nodes, k, p)"),
        ("mid", "k = 3", "[space.mid].k = 3: unknown key (graph 'er' takes: nodes, p)"),
        ("top", "nodes = [6, 3]", "[space.top].nodes = [6, 3]: low <= high must hold, but got (low=6, high=3)"),
        ("top", "nodes = 0", "[space.top].nodes = 0: must be an integer >= 1"),
        ("top", "nodes = 3.0", "[space.top].nodes = 3.0: must be an integer >= 1"),
        ("top", "nodes = [1, 2, 3]", "[space.top].nodes = [1, 2, 3]: must be a scalar (fixed) or a [low, high] pair"),
        ("top", "k = [2.5, 3]", "[space.top].k = [2.5, 3]: low must be an integer >= 2"),
        ("top", "k = 1", "[space.top].k = 1: must be an integer >= 2"),
        ("mid", "p = [0.1, 1.5]", "[space.mid].p = [0.1, 1.5]: high must be >= 0 and <= 1"),
        ("mid", "p = true", "[space.mid].p = true: must be a number >= 0 and <= 1"),
        ("mid", "p = { low = 0.0, high = 0.5, log = true }",
         "[space.mid].p = { low = 0.0, high = 0.5, log = true }: a log scale needs low > 0, but got low=0.0"),
        ("mid", "p = { low = 0.1 }", "[space.mid].p = { low = 0.1 }: must be a scalar (fixed) or a [low, high] pair"),
        ("bottom", 'graph = "ba"\nm = 0', "[space.bottom].m = 0: must be an integer >= 1"),
    ],
)
def test_level_errors(tmp_path, level, body, line):
    expect_error(tmp_path, MINIMAL + f"[space.{level}]\n" + body + "\n", line)


PARAMS = MINIMAL + '[space]\nkind = "params"\n[space.params]\n{}\n'


@pytest.mark.parametrize(
    ("entry", "line"),
    [
        ('x = { type = "float", low = 1.0, high = 1.0 }',
         '[space.params].x = { type = "float", low = 1.0, high = 1.0 }: low < high must hold, but got (low=1.0, high=1.0)'),
        ('x = { type = "int", low = 3, high = 2 }',
         "[space.params].x = { type = \"int\", low = 3, high = 2 }: low <= high must hold, but got (low=3, high=2)"),
        ('x = { type = "int", low = 1.5, high = 3 }', "[space.params.x].low = 1.5: must be an integer"),
        ('x = { type = "float", low = 0, high = 1, log = true }', "a log scale needs low > 0, but got low=0.0"),
        ('x = { type = "float", low = 1 }', '[space.params].x = { type = "float", low = 1 }: missing: a float parameter needs high'),
        ('x = { type = "flaot", low = 1 }', "[space.params.x].type = \"flaot\": unknown parameter type (did you mean 'float'?)"),
        ("x = { low = 1 }", "[space.params.x].type: missing: every parameter needs a type"),
        ('x = { type = "int", low = 1, high = 2, lwo = 1 }', "[space.params.x].lwo = 1: unknown key (did you mean 'low'?)"),
        ('x = { type = "categorical", choices = [] }', "[space.params.x].choices = []: must be a non-empty list"),
        ('x = { type = "categorical", choices = [[1]] }', "[space.params.x].choices = [[1]]: must be a non-empty list"),
        ('x = { type = "categorical", choices = ["a", "a"] }', "choices must be distinct"),
        ('x = { type = "categorical", choices = ["a"], low = 1 }',
         "[space.params.x].low = 1: not allowed for a categorical parameter"),
        ('x = { type = "categorical" }', "missing: a categorical parameter needs choices"),
        ('x = { type = "float", low = 0, high = 1, choices = [1] }',
         "[space.params.x].choices = [1]: not allowed for a float parameter"),
        ("x = 3", '[space.params].x = 3: must be a table like { type = "float", low = 0.0, high = 1.0 }'),
    ],
)
def test_param_errors(tmp_path, entry, line):
    expect_error(tmp_path, PARAMS.format(entry), line)


def test_categorical_choices_of_mixed_types(tmp_path):
    spec = load_text(tmp_path, PARAMS.format('x = { type = "categorical", choices = [1, true, "a", 1.5] }\n'
                                             'n = { type = "int", low = 2, high = 2 }'))
    assert spec.space.params["x"].choices == (1, True, "a", 1.5)
    assert spec.space.params["n"] == ParamSpec("int", 2, 2)


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("epochs = -1", "[train].epochs = -1: must be > 0"),
        ("epochs = 0", "[train].epochs = 0: must be > 0"),
        ("epochs = nan", "[train].epochs = nan: must be a finite number > 0"),
        ("epoch = 3", "[train].epoch = 3: unknown key (did you mean 'epochs'?)"),
        ("batch_size = 0", "[train].batch_size = 0: must be an integer >= 1"),
        ("batch_size = 1.5", "[train].batch_size = 1.5: must be an integer >= 1"),
        ("batch_size = true", "[train].batch_size = true: must be an integer >= 1"),
        ("lr = 0", "[train].lr = 0: must be > 0"),
        ('lr = "0.1"', '[train].lr = "0.1": must be a number > 0'),
        ("momentum = 1", "[train].momentum = 1: must be >= 0 and < 1"),
        ("momentum = -0.1", "[train].momentum = -0.1: must be >= 0 and < 1"),
        ("nesterov = 1", "[train].nesterov = 1: must be true or false"),
        ("weight_decay = -1e-3", "[train].weight_decay = -0.001: must be >= 0"),
        ("samples_per_point = 0", "[train].samples_per_point = 0: must be an integer >= 1"),
        ("max_seconds = 0", "[train].max_seconds = 0: must be > 0"),
        ('optimizer = "adam"', "[train].optimizer = \"adam\": unknown optimizer (did you mean 'adamw'?); valid: sgd, adamw"),
        ('optimizer = "adamw"\nmomentum = 0.9', '[train].momentum = 0.9: only used with optimizer = "sgd", not "adamw"'),
        ('optimizer = "adamw"\nnesterov = false', '[train].nesterov = false: only used with optimizer = "sgd"'),
        ("warmup_epochs = -1", "[train].warmup_epochs = -1: must be >= 0"),
        ("warmup_epochs = 2", "[train].warmup_epochs = 2: must be less than epochs = 2 (the warm-up is part of"),
        ("epochs = 1\nwarmup_epochs = 1.5", "[train].warmup_epochs = 1.5: must be less than epochs = 1"),
        ("label_smoothing = 1", "[train].label_smoothing = 1: must be >= 0 and < 1"),
        ("crop_padding = -1", "[train].crop_padding = -1: must be an integer >= 0"),
        ('flip = "yes"', '[train].flip = "yes": must be true or false'),
        ("cutout = 2.5", "[train].cutout = 2.5: must be an integer >= 0"),
        ('channels_last = "yes"', '[train].channels_last = "yes": must be true, false or "auto"'),
    ],
)
def test_train_errors(tmp_path, body, line):
    expect_error(tmp_path, MINIMAL + "[train]\n" + body + "\n", line)


def test_train_accepts_fractional_epochs(tmp_path):
    spec = load_text(tmp_path, MINIMAL + "[train]\nepochs = 0.25\nmax_seconds = 30\n")
    assert (spec.train.epochs, spec.train.max_seconds) == (0.25, 30.0)


def test_the_optimizer_picks_the_default_rate_and_decay(tmp_path):
    sgd = load_text(tmp_path, MINIMAL).train
    assert (sgd.optimizer, sgd.lr, sgd.weight_decay, sgd.channels_last) == ("sgd", 0.05, 5e-4, "auto")
    adamw = load_text(tmp_path, MINIMAL + '[train]\noptimizer = "adamw"\n').train
    assert (adamw.lr, adamw.weight_decay) == (2e-3, 0.05)
    given = load_text(tmp_path, MINIMAL + '[train]\noptimizer = "adamw"\nlr = 1e-3\nweight_decay = 0.0\n').train
    assert (given.lr, given.weight_decay) == (1e-3, 0.0)


def test_record_names_built_in_objectives_of_a_network_space(tmp_path):
    spec = load_text(tmp_path, MINIMAL + '[search]\nrecord = ["test_error", "flops"]\n')
    assert spec.search.record == ("test_error", "flops") and spec.to_dict()["search"]["record"] == ["test_error", "flops"]
    assert "record" not in load_text(tmp_path, MINIMAL).to_dict()["search"]  # older run dirs keep their hash
    expect_error(tmp_path, MINIMAL + '[search]\nrecord = ["test_eror"]\n',
                 "[search].record = [\"test_eror\"]: unknown objective 'test_eror' (did you mean 'test_error'?)")
    expect_error(tmp_path, MINIMAL + '[search]\nrecord = ["flops", "flops"]\n', "names an objective twice")
    expect_error(tmp_path, MINIMAL + '[search]\nrecord = ["error"]\n',
                 "[search].record = [\"error\"]: 'error' is already an objective")
    expect_error(tmp_path, PARAMS.format('x = { type = "int", low = 1, high = 2 }') + '[search]\nrecord = ["flops"]\n',
                 '[search].record = ["flops"]: needs a network space')


def test_final_training_takes_trains_settings_unless_export_overrides_them(tmp_path):
    spec = load_text(tmp_path, MINIMAL + "[train]\nepochs = 2\nlr = 0.1\nwarmup_epochs = 0.5\nflip = true\n"
                     "label_smoothing = 0.1\nmax_seconds = 9\nsamples_per_point = 2\n"
                     "[export]\nfinal_epochs = 8\ncrop_padding = 2\nflip = false\n")
    f = spec.final_train()
    assert (f.epochs, f.lr, f.warmup_epochs, f.label_smoothing) == (8, 0.1, 0.5, 0.1)
    assert (f.crop_padding, f.flip, f.cutout) == (2, False, 0)
    assert f.max_seconds is None and f.samples_per_point == 1
    capped = load_text(tmp_path, MINIMAL + "[train]\nmax_seconds = 9\n[export]\nmax_seconds = 600\n")
    assert (capped.train.max_seconds, capped.final_train().max_seconds) == (9, 600)
    expect_error(tmp_path, MINIMAL + "[export]\nmax_seconds = 0\n", "[export].max_seconds = 0: must be > 0")
    assert load_text(tmp_path, MINIMAL + "[export]\nfull_data = true\n").export.full_data
    expect_error(tmp_path, MINIMAL + "[export]\nfull_data = 1\n", "[export].full_data = 1: must be true or false")
    expect_error(tmp_path, MINIMAL + "[train]\nepochs = 9\nwarmup_epochs = 6\n[export]\nfinal_epochs = 5\n",
                 "[export].warmup_epochs: must be less than final_epochs = 5 (it defaults to [train]'s, 6)")


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ('strategy = "bayes"', '[search].strategy = "bayes": unknown strategy; valid: bo, evolution, random'),
        ('strategy = "randon"', "[search].strategy = \"randon\": unknown strategy (did you mean 'random'?)"),
        ("budget = 0", "[search].budget = 0: must be an integer >= 1"),
        ("initial = 0", "[search].initial = 0: must be an integer >= 1"),
        ("batch = 0", "[search].batch = 0: must be an integer >= 1"),
    ],
)
def test_search_errors(tmp_path, body, line):
    expect_error(tmp_path, MINIMAL + "[search]\n" + body + "\n", line)


# --- [search.options] ---------------------------------------------------------------------------------


def test_search_options_are_loaded_as_typed_and_passed_to_the_strategy(tmp_path):
    from nago_spec.strategies import STRATEGIES

    spec = load_text(tmp_path, MINIMAL + '[search]\nstrategy = "evolution"\n[search.options]\n'
                                         "pop_size = 12\neta_crossover = 10\nmutation_prob = 0.25\n")
    assert spec.search.strategy == "evolution" and "evolution" in STRATEGIES
    assert spec.search.options == {"pop_size": 12, "eta_crossover": 10.0, "mutation_prob": 0.25}
    assert type(spec.search.options["eta_crossover"]) is float  # an int is taken where the default is a float
    assert isinstance(spec.search.options, FrozenMap)
    # an inline table is the same, and the default strategy (bo) judges options when none is named
    inline = load_text(tmp_path, MINIMAL + "[search]\noptions = { beta = 3, pop_size = 32 }\n")
    assert inline.search.options == {"beta": 3.0, "pop_size": 32}
    # what runners/run.py does with them
    from nago_spec.problem import ObjectiveInfo, Problem
    from nago_spec.space import FloatParam, SearchSpace

    problem = Problem(SearchSpace((FloatParam("x", 0.0, 1.0),)), (ObjectiveInfo("f", "minimize", False),))
    strategy = STRATEGIES.get(spec.search.strategy)(problem, seed=0, options=spec.search.options)
    assert strategy.options["pop_size"] == 12 and strategy.options["crossover_prob"] == 0.9
    assert load_text(tmp_path, MINIMAL).search.options == {}


def test_search_options_need_not_import_torch(tmp_path):
    import subprocess
    import sys

    path = write(tmp_path, MINIMAL)
    code = f"import sys, nago_spec.spec as s; s.load_spec({str(path)!r}); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # only a spec with [search.options] looks into the strategies


EVOLUTION = MINIMAL + '[search]\nstrategy = "evolution"\n[search.options]\n'


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("popsize = 10",
         ("[search.options].popsize = 10: unknown option for strategy 'evolution' (did you mean 'pop_size'?); "
          "valid: pop_size, crossover_prob, eta_crossover, eta_mutation, mutation_prob")),
        ("pop_size = 2.5", "[search.options].pop_size = 2.5: must be an integer (strategy 'evolution', default 20)"),
        ("pop_size = true", "[search.options].pop_size = true: must be an integer (strategy 'evolution', default 20)"),
        ('eta_mutation = "20"',
         "[search.options].eta_mutation = \"20\": must be a number (strategy 'evolution', default 20.0)"),
        ("crossover_prob = [0.9]",
         "[search.options].crossover_prob = [0.9]: must be a number (strategy 'evolution', default 0.9)"),
        ("mutation_prob = false",
         "[search.options].mutation_prob = false: must be a number (strategy 'evolution', default none)"),
        ("eta_crossover = nan",
         "[search.options].eta_crossover = nan: must be a finite number (strategy 'evolution', default 15.0)"),
        ("pop_size = 1", ("[search.options] = { pop_size = 1 }: invalid EvolutionStrategy options: "
                          "`pop_size` must be an integer >= 2, but got 1")),
        ("crossover_prob = 1.5", ("[search.options] = { crossover_prob = 1.5 }: invalid EvolutionStrategy options: "
                                  "`crossover_prob` must be a number in [0, 1], but got 1.5")),
    ],
)
def test_search_option_errors(tmp_path, body, line):
    expect_error(tmp_path, EVOLUTION + body + "\n", line)


def test_search_option_errors_are_reported_together(tmp_path):
    lines = error_lines(tmp_path, MINIMAL + '[search]\nstrategy = "random"\noptions = { beta = 2.0 }\nbudget = 0\n')
    assert [line.split(": ", 1)[1] for line in lines] == [
        "[search].budget = 0: must be an integer >= 1",
        "[search.options].beta = 2.0: unknown option for strategy 'random'; valid: (none)",
    ]
    # a strategy that is itself wrong has no options to judge: one line only
    lines = error_lines(tmp_path, MINIMAL + '[search]\nstrategy = "evo"\noptions = { popsize = 2 }\n')
    assert len(lines) == 1 and "[search].strategy" in lines[0]
    expect_error(tmp_path, MINIMAL + "[search]\noptions = 3\n", "[search].options = 3: must be a table ([search.options])")


def test_every_strategy_option_default_is_a_toml_scalar_or_none():
    from nago_spec.strategies import STRATEGIES

    for name in STRATEGIES:
        for key, default in STRATEGIES.get(name).default_options.items():
            assert default is None or isinstance(default, (bool, int, float, str)), (name, key)


@pytest.mark.parametrize(
    ("section", "body", "line"),
    [
        ("run", 'backend = "dask"', '[run].backend = "dask": unknown backend; valid: local, process, ray'),
        ("run", "trial_timeout = 0", "[run].trial_timeout = 0: must be > 0"),
        ("run", "max_retries = -1", "[run].max_retries = -1: must be an integer >= 0"),
        ("run", "num_gpus = -1", "[run].num_gpus = -1: must be >= 0"),
        ("run", 'address = ""', '[run].address = "": must be a non-empty string'),
        ("run", 'backend = "locall"', "[run].backend = \"locall\": unknown backend (did you mean 'local'?)"),
        ("run", "workers = 0", "[run].workers = 0: must be an integer >= 1"),
        ("export", 'onnx = "yes"', '[export].onnx = "yes": must be true or false'),
        ("export", "final_epochs = 0", "[export].final_epochs = 0: must be > 0"),
        ("export", "max_models = 0", "[export].max_models = 0: must be an integer >= 1"),
        ("export", "trials = []", "[export].trials = []: must be a non-empty list of trial numbers"),
        ("export", "trials = 3", "[export].trials = 3: must be a non-empty list of trial numbers"),
        ("export", "trials = [1, -2]", "[export].trials = [1, -2]: must be a non-empty list of trial numbers"),
        ("export", "trials = [1, true]", "[export].trials = [1, true]: must be a non-empty list of trial numbers"),
        ("export", "trials = [4, 4]", "[export].trials = [4, 4]: names a trial twice"),
        ("export", "opset = 16", "[export].opset = 16: must be an integer >= 17 and <= 23"),
        ("export", "opset = 24", "[export].opset = 24: must be an integer >= 17 and <= 23"),
        ("export", "samples = 0", "[export].samples = 0: must be an integer >= 1"),
        ("export", 'select = "best"', '[export].select = "best": unknown selection'),
        ("export", 'order_by = "eror"', "[export].order_by = \"eror\": not an objective of this spec (did you mean 'error'?)"),
        ("export", "cutout = -1", "[export].cutout = -1: must be an integer >= 0"),
        ("export", "crop_padding = 1.5", "[export].crop_padding = 1.5: must be an integer"),
        ("export", 'flip = "yes"', '[export].flip = "yes": must be true or false'),
        ("export", "param_budget = 0", "[export].param_budget = 0: must be an integer >= 1"),
        ("export", 'param_budget = "90k"', '[export].param_budget = "90k": must be an integer'),
    ],
)
def test_run_and_export_errors(tmp_path, section, body, line):
    expect_error(tmp_path, MINIMAL + f"[{section}]\n" + body + "\n", line)


OBJ = "version = 1\n{}\n"


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("", "[[objectives]]: missing: declare at least one objective"),
        ("objectives = []", "objectives = []: must declare at least one objective"),
        ('[objectives]\nname = "error"', 'objectives = { name = "error" }: must be an array of tables ([[objectives]])'),
        ('[[objectives]]\nname = "eror"', "[objectives][0].name = \"eror\": unknown objective (did you mean 'error'?)"),
        ("[[objectives]]\ndirection = \"minimize\"", "[objectives][0].name: missing: every objective needs a name"),
        ('[[objectives]]\nname = "error"\n[[objectives]]\nname = "error"',
         '[objectives][1].name = "error": duplicate objective name (also [objectives][0])'),
        ('[[objectives]]\nname = "error"\ndirection = "maximize"',
         "[objectives][0].direction = \"maximize\": the built-in objective 'error' is always minimized"),
        ('[[objectives]]\nname = "error"\ncheap = true', "[objectives][0].cheap = true: only allowed with a callable"),
        ('[[objectives]]\nname = "e"\ncallable = "problems.py:zdt"\ndirection = "up"',
         '[objectives][0].direction = "up": unknown direction; valid: minimize, maximize'),
        ('[[objectives]]\nname = "e"\ncallable = "problems.py:zdt"\ncheap = 1', "[objectives][0].cheap = 1: must be true or false"),
        ('[[objectives]]\nname = "error"\n[[objectives]]\nname = "e"\ncallable = "energy.py:estimate"',
         '[objectives][1].callable = "energy.py:estimate": cannot import: no file energy.py next to the spec'),
        ('[[objectives]]\nname = "e"\ncallable = "problems.py:nope"',
         "[objectives][0].callable = \"problems.py:nope\": cannot import: module 'problems.py' has no function 'nope'"),
        ('[[objectives]]\nname = "e"\ncallable = "problems.py:ANSWER"',
         "[objectives][0].callable = \"problems.py:ANSWER\": cannot import: 'ANSWER' is not callable"),
        ('[[objectives]]\nname = "e"\ncallable = "no_such_module_xyz:f"',
         "[objectives][0].callable = \"no_such_module_xyz:f\": cannot import: no module named 'no_such_module_xyz'"),
        ('[[objectives]]\nname = "e"\ncallable = "raising.py:f"',
         '[objectives][0].callable = "raising.py:f": cannot import: the module raised ValueError: bad import'),
        ('[[objectives]]\nname = "e"\ncallable = "zdt"',
         "[objectives][0].callable = \"zdt\": must read 'module:function' or 'file.py:function'"),
        ('[[objectives]]\nname = "error"\nweight = 2', "[objectives][0].weight = 2: unknown key"),
    ],
)
def test_objective_errors(tmp_path, problems, body, line):
    write(tmp_path, "raise ValueError('bad import')\n", "raising.py")
    expect_error(tmp_path, OBJ.format(body), line)


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ('objective = "parms"\nmax = 1', "[constraints][0].objective = \"parms\": unknown objective (did you mean 'params'?)"),
        ('objective = "error"', "[constraints][0]: needs min, max or both"),
        ('objective = "error"\nmin = 3\nmax = 1', "[constraints][0]: min <= max must hold, but got (min=3.0, max=1.0)"),
        ('objective = "error"\nmin = "a"', '[constraints][0].min = "a": must be a number'),
        ("max = 1", "[constraints][0].objective: missing: every constraint names an objective"),
    ],
)
def test_constraint_errors(tmp_path, body, line):
    expect_error(tmp_path, MINIMAL + "[[constraints]]\n" + body + "\n", line)


def test_constraint_on_undeclared_builtin_is_allowed(tmp_path):
    spec = load_text(tmp_path, MINIMAL + '[[constraints]]\nobjective = "params"\nmax = 1e5\n')
    assert spec.constraints == (ConstraintInfo("params", None, 1e5),)


def test_every_problem_of_a_file_is_reported(tmp_path):
    lines = error_lines(tmp_path, """\
version = 2
seed = -1
[trian]
epochs = 1
[train]
epoch = 3
epochs = -1
[space.top]
nodes = [6, 3]
[[objectives]]
name = "eror"
[search]
budget = 0
""")
    path = tmp_path / "spec.toml"
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert len(lines) == 8, lines
    assert f"{path}: [train].epochs = -1: must be > 0" in lines
    assert f"{path}: [space.top].nodes = [6, 3]: low <= high must hold, but got (low=6, high=3)" in lines


def test_no_traceback_noise_in_message(tmp_path):
    lines = error_lines(tmp_path, MINIMAL + "[train]\nepochs = -1\n")
    assert lines == [f"{tmp_path / 'spec.toml'}: [train].epochs = -1: must be > 0"]


# --- overrides -------------------------------------------------------------------------------------


def test_overrides(tmp_path):
    path = write(tmp_path, NETWORK_EXAMPLE)
    spec = load_spec(path, {"seed": 3, "search": {"budget": 10}, "run": {"backend": "local", "workers": 1}})
    assert spec.seed == 3 and spec.search.budget == 10 and spec.search.initial == 8
    assert (spec.run.backend, spec.run.workers) == ("local", 1)
    assert spec.space == load_spec(path).space


def test_overrides_none_means_not_given(tmp_path):
    path = write(tmp_path, NETWORK_EXAMPLE)
    assert load_spec(path, {"seed": None, "run": {"workers": None}}) == load_spec(path)


def test_overrides_create_sections_and_are_validated(tmp_path):
    path = write(tmp_path, MINIMAL)
    assert load_spec(path, {"search": {"budget": 5}, "space": {"stage_ratios": (0.5, 0.5)}}).search.budget == 5
    with pytest.raises(SpecError, match=re.escape(f"{path}: [search].budget = 0: must be an integer >= 1")):
        load_spec(path, {"search": {"budget": 0}})


# --- frozen, hashable, picklable -------------------------------------------------------------------


def test_frozen(tmp_path):
    spec = load_text(tmp_path, NETWORK_EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.train.epochs = 3.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.space.top.params["nodes"] = 4  # type: ignore[index]
    with pytest.raises(AttributeError):
        spec.space.top.params._items = {}  # type: ignore[attr-defined]
    assert isinstance(spec.objectives, tuple) and isinstance(spec.space.stage_ratios, tuple)


def test_hashable_and_picklable(tmp_path, problems):
    for text in (NETWORK_EXAMPLE, PARAMS_EXAMPLE):
        spec = load_text(tmp_path, text)
        assert pickle.loads(pickle.dumps(spec)) == spec  # specs travel to worker processes
        assert hash(spec) == hash(pickle.loads(pickle.dumps(spec)))
    assert FrozenMap({"a": 1}) == {"a": 1} and hash(FrozenMap({"a": 1})) == hash(FrozenMap({"a": 1}))


# --- to_dict, dump_toml, search_hash ---------------------------------------------------------------


def assert_round_trip(spec: Spec, directory: Path) -> None:
    again = load_spec(write(directory, dump_toml(spec), "dumped.toml"))
    assert dataclasses.replace(again, path=spec.path) == spec
    assert again.to_dict() == spec.to_dict()


FULL = """\
version = 1
name = "full \\"quoted\\" ü"
seed = 7
[data]
dataset = "idx"
path = "data"
val_fraction = 0.1
limit = 500
classes = ["t-shirt", "trouser"]
[space]
stage_ratios = [0.25, 0.75]
channel_ratios = [1, 3]
head_width = 0
share_graphs = true
[space.top]
graph = "ba"
nodes = [4, 8]
m = 2
[space.mid]
p = { low = 0.05, high = 0.5, log = true }
[train]
epochs = 0.5
nesterov = false
max_seconds = 60
[[objectives]]
name = "error"
[[objectives]]
name = "energy"
callable = "problems.py:energy"
cheap = true
direction = "maximize"
[[constraints]]
objective = "energy"
min = -1
max = 1e30
[search]
strategy = "evolution"
[search.options]
pop_size = 8
eta_mutation = 5
mutation_prob = 1
[run]
backend = "local"
workers = 3
[export]
onnx = false
max_models = 4
opset = 17
"""


@pytest.mark.parametrize("text", [NETWORK_EXAMPLE, PARAMS_EXAMPLE, MINIMAL, FULL], ids=["network", "params", "minimal", "full"])
def test_dump_round_trip(tmp_path, problems, text):
    (tmp_path / "data").mkdir()
    assert_round_trip(load_text(tmp_path, text), tmp_path)


@pytest.mark.parametrize("path", REPO_SPECS or [None], ids=[p.name for p in REPO_SPECS] or ["none"])
def test_repo_specs_round_trip(tmp_path, path):
    if path is None:
        pytest.skip("no specs/*.toml yet")
    try:
        spec = load_spec(path)
    except SpecError as exc:
        if all("no such directory" in line for line in exc.lines):
            pytest.skip(f"data set of {path.name} is not present here")
        raise
    assert_round_trip(spec, tmp_path)  # everything in a dump is absolute, so any directory will do


def test_to_dict_is_absolute_and_complete(tmp_path, problems):
    (tmp_path / "data").mkdir()
    d = load_text(tmp_path, FULL).to_dict()
    assert d["data"]["path"] == str((tmp_path / "data").resolve())
    assert d["objectives"][1]["callable"] == f"{problems.resolve()}:energy"
    assert d["space"]["mid"]["p"] == {"low": 0.05, "high": 0.5, "log": True}
    assert d["space"]["top"] == {"graph": "ba", "merge": {"sum": 1.0}, "nodes": [4, 8], "m": 2}
    assert d["space"]["bottom"] == {"graph": "ws", "merge": {"sum": 1.0}, "nodes": [3, 10], "k": [2, 5],
                                    "p": [0.1, 0.9]}
    assert set(d["train"]) == {f.name for f in dataclasses.fields(load_text(tmp_path, FULL).train)}
    assert d["objectives"][0] == {"name": "error", "direction": "minimize"}


def test_dumped_spec_runs_from_another_directory(tmp_path, problems):
    spec = load_text(tmp_path, PARAMS_EXAMPLE)
    other = tmp_path / "elsewhere"
    other.mkdir()
    moved = load_spec(write(other, dump_toml(spec)))
    assert moved.objectives == spec.objectives and moved.space == spec.space


def test_search_hash(tmp_path):
    path = write(tmp_path, NETWORK_EXAMPLE)
    base = load_spec(path).key()
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert load_spec(path).key() == base
    assert load_spec(path, {"run": {"workers": 1, "backend": "local"}}).key() == base
    assert load_spec(path, {"name": "other", "export": {"final_epochs": 1}}).key() == base
    assert load_spec(path, {"train": {"epochs": 3}}).key() != base
    assert load_spec(path, {"seed": 1}).key() != base
    assert load_spec(path, {"search": {"budget": 21}}).key() != base
    beta = load_spec(path, {"search": {"options": {"beta": 3.0}}}).key()
    assert beta != base
    assert load_spec(path, {"search": {"options": {"beta": 3}}}).key() == beta  # 3 is 3.0 here
    assert load_spec(path, {"search": {"options": {}}}).key() == base  # no options, as before


def test_search_options_round_trip(tmp_path):
    spec = load_text(tmp_path, MINIMAL + '[search]\nstrategy = "evolution"\n'
                                         "options = { pop_size = 8, eta_mutation = 5, mutation_prob = 1 }\n")
    text = dump_toml(spec)
    assert "[search.options]\npop_size = 8\neta_mutation = 5.0\nmutation_prob = 1\n" in text
    assert spec.to_dict()["search"]["options"] == {"pop_size": 8, "eta_mutation": 5.0, "mutation_prob": 1}
    assert_round_trip(spec, tmp_path)
    assert "options" not in load_text(tmp_path, MINIMAL).to_dict()["search"]


# --- kind = "rnag" (the RandWire baseline, NAGO.md §4.2) ------------------------------------------------


RNAG = MINIMAL + '[space]\nkind = "rnag"\n'


def test_rnag_defaults(tmp_path):
    s = load_text(tmp_path, RNAG).space
    assert s.kind == "rnag" and s.levels == ("stage",)
    assert s.stage.graph == "ws"
    assert dict(s.stage.params) == {"nodes": Range(10, 40), "k": Range(2, 6), "p": Range(0.1, 0.9)}
    assert s.channel_ratios == (1.0, 2.0, 4.0) and s.head_width == 1280
    d = load_text(tmp_path, RNAG).to_dict()["space"]
    assert set(d) == {"kind", "param_budget", "channel_ratios", "head_width", "stage"}
    assert d["stage"] == {"graph": "ws", "merge": {"sum": 1.0}, "nodes": [10, 40], "k": [2, 6], "p": [0.1, 0.9]}


def test_rnag_stage_table_and_channel_ratios(tmp_path):
    s = load_text(tmp_path, RNAG + 'channel_ratios = [1, 2, 4, 8]\n[space.stage]\ngraph = "er"\nnodes = 6\n').space
    assert s.channel_ratios == (1.0, 2.0, 4.0, 8.0)
    assert s.stage.graph == "er" and dict(s.stage.params) == {"nodes": 6, "p": Range(0.1, 0.9)}
    s = load_text(tmp_path, RNAG + '[space.stage]\ngraph = "ba"\n').space
    assert dict(s.stage.params) == {"nodes": Range(10, 40), "m": Range(1, 4)}


@pytest.mark.parametrize(
    "body, line",
    [
        ("stage_ratios = [0.5, 0.5]", '[space].stage_ratios = [0.5, 0.5]: only allowed with kind = "hnag"'),
        ("share_graphs = true", '[space].share_graphs = true: only allowed with kind = "hnag"'),
        ("[space.top]\nnodes = 3", '[space.top]: only allowed with kind = "hnag"'),
        ("[space.mid]\nnodes = 3", '[space.mid]: only allowed with kind = "hnag"'),
        ("[space.stage]\nnode = 3", "[space.stage].node = 3: unknown key (did you mean 'nodes'?) (graph 'ws' takes: nodes, k, p)"),
        ("[space.stage]\nk = 1", "[space.stage].k = 1: must be an integer >= 2"),
        ("[space.stage]\nnodes = [6, 3]", "[space.stage].nodes = [6, 3]: low <= high must hold, but got (low=6, high=3)"),
        ('[space.stage]\ngraph = "wss"', "[space.stage].graph = \"wss\": unknown graph model (did you mean 'ws'?)"),
        ("[space.stag]\nnodes = 3", "[space.stag]: unknown section (did you mean 'space.stage'?)"),
        ("channel_ratios = []", "[space].channel_ratios = []: must have 1 to 6 entries (one per stage)"),
    ],
)
def test_rnag_errors(tmp_path, body, line):
    expect_error(tmp_path, RNAG + body + "\n", line)


def test_stage_table_refused_for_hnag_and_params(tmp_path):
    expect_error(tmp_path, MINIMAL + "[space.stage]\nnodes = 3\n", '[space.stage]: only allowed with kind = "rnag"')
    expect_error(tmp_path, MINIMAL + '[space]\nkind = "params"\nhead_width = 3\n[space.stage]\nnodes = 3\n'
                 '[space.params]\nx = { type = "int", low = 1, high = 2 }\n',
                 '[space].head_width = 3: only allowed with kind = "hnag" or "rnag"')


def test_rnag_errors_reported_together(tmp_path):
    path = write(tmp_path, RNAG + "stage_ratios = [1]\n[space.top]\nnodes = 3\n[space.stage]\np = 2\n")
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert len(e.value.lines) == 3


@pytest.mark.parametrize("extra", ["", 'param_budget = 999\nhead_width = 0\nchannel_ratios = [1, 3]\n'
                                       '[space.stage]\ngraph = "ba"\nnodes = [5, 9]\nm = 2\n'])
def test_rnag_round_trip(tmp_path, extra):
    assert_round_trip(load_text(tmp_path, RNAG + extra), tmp_path)


def test_rnag_example_spec_loads():
    spec = load_spec(Path(__file__).resolve().parents[1] / "specs" / "03_rnag_digits.toml")
    assert spec.space.kind == "rnag" and spec.data.dataset == "digits"
    assert spec.space.stage.graph == "ws" and spec.space.head_width == 64


# --- the extended knobs (NAGO.md §1.3: θ_S, θ_C, θ_M, θ_op; the paper's AugV1/AugV2) ----------------


HNAG = MINIMAL + "[space]\n"


@pytest.mark.parametrize(
    ("body", "field", "expected"),
    [
        ("stage_ratios = [0.34, [0.2, 0.5], 0.33]", "stage_ratios", (0.34, Range(0.2, 0.5), 0.33)),
        ("stage_ratios = [[1, 2], [1, 2]]", "stage_ratios", (Range(1.0, 2.0), Range(1.0, 2.0))),  # no sum rule
        ("stage_ratios = [2, { low = 0.1, high = 4, log = true }]", "stage_ratios", (2.0, Range(0.1, 4.0, log=True))),
        ("channel_ratios = [1, [1.5, 3], 4]", "channel_ratios", (1.0, Range(1.5, 3.0), 4.0)),
        ("head_width = [0, 512]", "head_width", Range(0, 512)),
        ("head_width = { low = 16, high = 256, log = true }", "head_width", Range(16, 256, log=True)),
        ('conv_type = "separable"', "conv_type", "separable"),
        ('conv_type = ["separable"]', "conv_type", "separable"),  # one choice is fixed
        ('conv_type = ["separable", "normal"]', "conv_type", ("separable", "normal")),
        ('ops = "conv5x5"', "ops", {"conv5x5": 1.0}),
        ('ops = ["conv3x3", "avgpool3x3"]', "ops", {"conv3x3": 1.0, "avgpool3x3": 1.0}),
        ("ops = { conv3x3 = 1, conv5x5 = [0.0, 1.0], avgpool3x3 = [0, 1] }", "ops",
         {"conv3x3": 1.0, "conv5x5": Range(0.0, 1.0), "avgpool3x3": Range(0.0, 1.0)}),
        ("ops = { avgpool5x5 = 2, conv1x3 = [0, 0.5] }", "ops", {"avgpool5x5": 2.0, "conv1x3": Range(0.0, 0.5)}),
    ],
)
def test_extended_space_values(tmp_path, body, field, expected):
    value = getattr(load_text(tmp_path, HNAG + body + "\n").space, field)
    assert value == expected
    if field == "ops":
        assert isinstance(value, FrozenMap) and list(value) == list(expected)  # the file's order is kept
    else:
        assert type(value) is type(expected)
        if isinstance(value, tuple):
            assert [type(v) for v in value] == [type(e) for e in expected]


def test_extended_defaults(tmp_path):
    s = load_text(tmp_path, MINIMAL).space
    assert s.conv_type == "normal" and s.ops == {"conv3x3": 1.0} and isinstance(s.ops, FrozenMap)
    assert all(s.level(name).merge == {"sum": 1.0} for name in ("top", "mid", "bottom"))
    assert load_text(tmp_path, RNAG).space.stage.merge == {"sum": 1.0}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('merge = "concat"', {"concat": 1.0}),
        ('merge = ["sum", "attention"]', {"sum": 1.0, "attention": 1.0}),
        ("merge = { sum = [0, 1], concat = [0, 1], attention = 0 }",
         {"sum": Range(0.0, 1.0), "concat": Range(0.0, 1.0), "attention": 0.0}),
        ("[space.top.merge]\nconcat = 2\nsum = 1", {"concat": 2.0, "sum": 1.0}),
    ],
)
def test_level_merge_values(tmp_path, body, expected):
    top = load_text(tmp_path, MINIMAL + "[space.top]\n" + body + "\n").space.top
    assert top.merge == expected and list(top.merge) == list(expected) and isinstance(top.merge, FrozenMap)
    assert "merge" not in top.params and dict(top.params) == {"nodes": Range(3, 10), "k": Range(2, 5), "p": Range(0.1, 0.9)}


def test_rnag_takes_merge_and_searched_widths(tmp_path):
    s = load_text(tmp_path, RNAG + "head_width = [8, 64]\nchannel_ratios = [[1, 2], 2]\n"
                                   '[space.stage]\nmerge = { sum = 1, concat = [0, 2] }\n').space
    assert s.stage.merge == {"sum": 1.0, "concat": Range(0.0, 2.0)}
    assert (s.head_width, s.channel_ratios) == (Range(8, 64), (Range(1.0, 2.0), 2.0))


ALL_OPS = "conv3x3, conv5x5, conv1x1, conv3x1, conv1x3, avgpool3x3, avgpool5x5"
ALL_MERGES = "sum, concat, attention"


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("stage_ratios = [0.5, [0.5, 0.1]]",
         "[space].stage_ratios = [0.5, [0.5, 0.1]]: stage 2: low <= high must hold, but got (low=0.5, high=0.1)"),
        ("stage_ratios = [[0, 1], 0.5]", "[space].stage_ratios = [[0, 1], 0.5]: stage 1: low must be > 0"),
        ("stage_ratios = [0.5, [1, 2, 3]]",
         "[space].stage_ratios = [0.5, [1, 2, 3]]: stage 2: must be a scalar (fixed) or a [low, high] pair (searched)"),
        ('stage_ratios = [[0.5, 1], "a"]',
         ('[space].stage_ratios = [[0.5, 1], "a"]: must be a list of 1 to 6 numbers > 0 summing to 1 (fixed), '
          "or of numbers > 0 and [low, high] pairs with low > 0 (searched)")),
        ("stage_ratios = [[1, 2], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2]]",
         "must be a list of 1 to 6 numbers > 0 summing to 1, but has 7"),
        ("channel_ratios = [1, [-1, 2], 4]", "[space].channel_ratios = [1, [-1, 2], 4]: stage 2: low must be > 0"),
        ("channel_ratios = [1, 2, -4]",
         "[space].channel_ratios = [1, 2, -4]: must be a list of numbers > 0 (fixed) or [low, high] pairs with low > 0 (searched)"),
        ("head_width = [-1, 5]", "[space].head_width = [-1, 5]: low must be an integer >= 0"),
        ("head_width = [16, 8.5]", "[space].head_width = [16, 8.5]: high must be an integer >= 0"),
        ("head_width = { low = 0, high = 8, log = true }",
         "[space].head_width = { low = 0, high = 8, log = true }: a log scale needs low > 0, but got low=0"),
        ('conv_type = "seperable"',
         "[space].conv_type = \"seperable\": unknown conv type (did you mean 'separable'?); valid: normal, separable"),
        ('conv_type = ["normal", "seperable"]',
         ("[space].conv_type = [\"normal\", \"seperable\"]: unknown conv type 'seperable' (did you mean 'separable'?); "
          "valid: normal, separable")),
        ('conv_type = ["normal", "normal"]', '[space].conv_type = ["normal", "normal"]: conv types must be distinct'),
        ("conv_type = []",
         "[space].conv_type = []: must be a conv type (fixed) or a non-empty list of them (searched); valid: normal, separable"),
        ("ops = { conv7x7 = 1.0 }",
         f"[space].ops.conv7x7 = 1.0: unknown operation (did you mean 'conv5x5'?); valid: {ALL_OPS}"),
        ('ops = ["conv3x3", "avgpool3x4"]',
         ("[space].ops = [\"conv3x3\", \"avgpool3x4\"]: unknown operation 'avgpool3x4' (did you mean 'avgpool3x3'?); "
          f"valid: {ALL_OPS}")),
        ('ops = "conv7x7"', "[space].ops = \"conv7x7\": unknown operation 'conv7x7' (did you mean 'conv5x5'?)"),
        ("ops = { conv3x3 = -1 }", "[space].ops.conv3x3 = -1: must be >= 0"),
        ("ops = { conv3x3 = [-0.5, 1] }", "[space].ops.conv3x3 = [-0.5, 1]: low must be >= 0"),
        ("ops = { conv3x3 = [1, 0] }", "[space].ops.conv3x3 = [1, 0]: low <= high must hold, but got (low=1.0, high=0.0)"),
        ('ops = { conv3x3 = "a" }', '[space].ops.conv3x3 = "a": must be a number >= 0'),
        ("ops = {}", "[space].ops = {}: needs at least one operation"),
        ("ops = []", "[space].ops = []: needs at least one operation"),
        ('ops = ["conv3x3", "conv3x3"]', '[space].ops = ["conv3x3", "conv3x3"]: each operation may be listed once'),
        ("ops = 3", ("[space].ops = 3: must be a name, a list of names or a table of weights like "
                     f"{{ conv3x3 = 1.0, conv5x5 = [0, 1] }}; valid: {ALL_OPS}")),
        ('ops = ["avgpool3x3", "avgpool5x5"]',
         ('[space].ops = ["avgpool3x3", "avgpool5x5"]: needs a conv (conv3x3, conv5x5, conv1x1, conv3x1, conv1x3) '
          "whose weight can be > 0: a bottom graph's output nodes may only be convs (NAGO.md §1.3)")),
        ("ops = { conv3x3 = 0, conv5x5 = [0, 0], avgpool3x3 = 1 }",
         "[space].ops = { conv3x3 = 0, conv5x5 = [0, 0], avgpool3x3 = 1 }: needs a conv"),
        ("[space.opps]\nconv3x3 = 1", "[space.opps]: unknown section (did you mean 'space.ops'?)"),
    ],
)
def test_extended_space_errors(tmp_path, body, line):
    expect_error(tmp_path, HNAG + body + "\n", line)


@pytest.mark.parametrize(
    ("level", "body", "line"),
    [
        ("top", 'merge = "concta"',
         f"[space.top].merge = \"concta\": unknown merge kind 'concta' (did you mean 'concat'?); valid: {ALL_MERGES}"),
        ("mid", "merge = { sume = 1 }", f"[space.mid].merge.sume = 1: unknown merge kind (did you mean 'sum'?); valid: {ALL_MERGES}"),
        ("bottom", "merge = { sum = -1 }", "[space.bottom].merge.sum = -1: must be >= 0"),
        ("top", "merge = { sum = 0, concat = [0, 0] }",
         "[space.top].merge = { sum = 0, concat = [0, 0] }: needs a weight that can be > 0"),
        ("top", "merge = []", "[space.top].merge = []: needs at least one merge kind"),
        ("top", 'merg = "sum"', "[space.top].merg = \"sum\": unknown key (did you mean 'merge'?) (graph 'ws' takes: nodes, k, p)"),
        ("top", 'graph = "wss"\nmerge = "sun"', "[space.top].merge = \"sun\": unknown merge kind 'sun' (did you mean 'sum'?)"),
    ],
)
def test_level_merge_errors(tmp_path, level, body, line):
    expect_error(tmp_path, MINIMAL + f"[space.{level}]\n" + body + "\n", line)


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ('conv_type = "separable"', '[space].conv_type = "separable": only allowed with kind = "hnag"'),
        ('ops = "conv3x3"', '[space].ops = "conv3x3": only allowed with kind = "hnag"'),
        ("ops = { conv3x3 = [0, 1] }", '[space].ops = { conv3x3 = [0, 1] }: only allowed with kind = "hnag"'),
        ('[space.stage]\nmerge = "concta"', "[space.stage].merge = \"concta\": unknown merge kind 'concta'"),
    ],
)
def test_extended_rnag_errors(tmp_path, body, line):
    expect_error(tmp_path, RNAG + body + "\n", line)


def test_params_kind_refuses_the_extended_knobs(tmp_path):
    lines = error_lines(tmp_path, PARAMS.format('x = { type = "int", low = 1, high = 2 }').replace(
        "[space.params]", 'conv_type = "normal"\nops = ["conv3x3"]\nhead_width = [1, 2]\n'
                          'channel_ratios = [[1, 2]]\n[space.params]'))
    path = tmp_path / "spec.toml"
    assert lines == [
        f'{path}: [space].head_width = [1, 2]: only allowed with kind = "hnag" or "rnag"',
        f'{path}: [space].channel_ratios = [[1, 2]]: only allowed with kind = "hnag" or "rnag"',
        f'{path}: [space].conv_type = "normal": only allowed with kind = "hnag"',
        f'{path}: [space].ops = ["conv3x3"]: only allowed with kind = "hnag"',
    ]


def test_extended_errors_reported_together(tmp_path):
    lines = error_lines(tmp_path, HNAG + 'stage_ratios = [0.5, [0.5, 0.1]]\nconv_type = "x"\n'
                                         "ops = { conv7x7 = 1, avgpool3x3 = -1 }\n"
                                         '[space.top]\nmerge = "concta"\n[space.mid]\nmerge = { sum = 0 }\n')
    assert len(lines) == 6, lines


EXTENDED = MINIMAL + """
[space]
param_budget = 30000
stage_ratios = [0.34, [0.2, 0.5], { low = 0.1, high = 0.9, log = true }]
channel_ratios = [1, [1.5, 3], 4]
head_width = { low = 16, high = 256, log = true }
conv_type = ["normal", "separable"]
ops = { conv5x5 = 1.0, conv3x3 = [0.0, 1.0], avgpool3x3 = [0, 1], conv1x1 = { low = 0.01, high = 1, log = true } }
[space.top]
merge = { sum = [0, 1], concat = [0, 1], attention = 0 }
[space.mid]
merge = "concat"
[space.bottom]
graph = "ba"
merge = ["sum", "attention"]
"""


def test_extended_round_trip(tmp_path):
    spec = load_text(tmp_path, EXTENDED)
    assert_round_trip(spec, tmp_path)
    assert pickle.loads(pickle.dumps(spec)) == spec and hash(pickle.loads(pickle.dumps(spec))) == hash(spec)
    text = dump_toml(spec)
    assert "merge = { sum = [0.0, 1.0], concat = [0.0, 1.0], attention = 0.0 }" in text  # inline in [space.top]
    assert "head_width = { low = 16, high = 256, log = true }" in text  # a Range stays one key, not a section
    d = spec.to_dict()["space"]
    assert d["stage_ratios"] == [0.34, [0.2, 0.5], {"low": 0.1, "high": 0.9, "log": True}]
    assert d["ops"] == {"conv5x5": 1.0, "conv3x3": [0.0, 1.0], "avgpool3x3": [0.0, 1.0],
                        "conv1x1": {"low": 0.01, "high": 1.0, "log": True}}
    assert d["conv_type"] == ["normal", "separable"]
    assert list(d["bottom"]) == ["graph", "merge", "nodes", "m"]
    assert d["bottom"]["merge"] == {"sum": 1.0, "attention": 1.0}


def test_extended_rnag_round_trip(tmp_path):
    spec = load_text(tmp_path, RNAG + "head_width = [8, 64]\nchannel_ratios = [[1, 2], 2]\n"
                                      '[space.stage]\nmerge = { sum = 1, concat = [0, 2] }\n')
    assert_round_trip(spec, tmp_path)
    d = spec.to_dict()["space"]
    assert set(d) == {"kind", "param_budget", "channel_ratios", "head_width", "stage"}
    assert d["stage"]["merge"] == {"sum": 1.0, "concat": [0.0, 2.0]}


def test_search_hash_follows_the_extended_knobs(tmp_path):
    path = write(tmp_path, EXTENDED)
    base = load_spec(path).key()
    assert load_spec(path, {"space": {"top": {"merge": {"sum": [0, 1], "concat": [0, 0.5]}}}}).key() != base
    assert load_spec(path, {"space": {"mid": {"merge": "sum"}}}).key() != base
    assert load_spec(path, {"space": {"conv_type": "normal"}}).key() != base
    assert load_spec(path, {"space": {"ops": {"conv3x3": 1}}}).key() != base
    assert load_spec(path, {"space": {"mid": {"merge": ["concat"]}}}).key() == base  # same distribution
