"""The spec file: TOML -> validated, frozen dataclasses, with every problem of a file reported at once."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from nago_spec.callables import (
    CallableError,
    is_file_ref,
    load_callable,
    resolve_ref,
    split_ref,
)
from nago_spec.errors import SpecError
from nago_spec.device import DEVICE_KINDS, PRECISIONS
from nago_spec.generator import CONV_OP_NAMES, CONV_TYPES, MERGE_NAMES, OP_NAMES
from nago_spec.graphs import GRAPH_MODELS, GraphParam
from nago_spec.objectives import OBJECTIVES
from nago_spec.fidelity import FIDELITY_ON, Fidelity
from nago_spec.problem import DIRECTIONS, ConstraintInfo, ObjectiveInfo
from nago_spec.registry import BACKENDS, DATASETS, STRATEGIES, Registry, did_you_mean

SUPPORTED_VERSION = 1
SPACE_KINDS = ("hnag", "rnag", "params")
PARAM_TYPES = ("float", "int", "categorical")
LEVELS = ("top", "mid", "bottom")
#: The one level table of an RNAG (RandWire) space: the graph each stage draws.
RNAG_LEVEL = "stage"
#: [space] keys only an hnag space takes (an rnag space has one graph per stage, no stage ratios, and
#: RandWire's fixed node operation).
HNAG_ONLY_KEYS = ("stage_ratios", "share_graphs", "conv_type", "ops")
MAX_STAGES = 6
OPSET_RANGE = (17, 23)

K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(Mapping[K, V], Generic[K, V]):
    """An immutable, hashable, picklable mapping (MappingProxyType cannot be pickled to a worker)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[K, V] | None = None):
        object.__setattr__(self, "_items", dict(items or {}))

    def __getitem__(self, key: K) -> V:
        return self._items[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FrozenMap is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenMap, (self._items,))

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"


# ---------------------------------------------------------------------------------------------------
# The frozen spec objects
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """A searched numeric range, from a ``[low, high]`` pair (or ``{low, high, log}``) in TOML."""

    low: int | float
    high: int | float
    log: bool = False


@dataclass(frozen=True)
class LevelSpec:
    """One level of the hierarchy: a graph model and its parameters, each fixed or a searched Range.

    ``merge`` is the level's merge distribution θ_M: relative weights over MERGE_NAMES, each fixed or a
    searched Range, normalised by the generator.
    """

    graph: str
    params: Mapping[str, int | float | Range]
    merge: Mapping[str, float | Range] = FrozenMap({"sum": 1.0})


#: Values a level parameter takes when the spec leaves it out (``nodes`` of the mid level: _MID_NODES).
PARAM_DEFAULTS: Mapping[str, Range] = FrozenMap(
    {"nodes": Range(3, 10), "k": Range(2, 5), "p": Range(0.1, 0.9), "m": Range(1, 4)}
)
_MID_NODES = Range(1, 10)
#: RNAG stage defaults: NAGO.md §1.9 puts RNAG at 30..120 op nodes, i.e. 10..40 per stage over 3 stages
#: (RandWire's own default, 32 nodes, K=4, P=0.75, lies inside); K up to 6 as RandWire explores K in 2..8.
_RNAG_DEFAULTS: Mapping[str, Range] = FrozenMap({"nodes": Range(10, 40), "k": Range(2, 6)})
DEFAULT_GRAPHS: Mapping[str, str] = FrozenMap({"top": "ws", "mid": "er", "bottom": "ws", RNAG_LEVEL: "ws"})


def level_default(level: str, name: str) -> Range | None:
    """The default of level parameter ``name`` (None: the graph model's parameter has no default)."""
    if level == "mid" and name == "nodes":
        return _MID_NODES
    if level == RNAG_LEVEL and name in _RNAG_DEFAULTS:
        return _RNAG_DEFAULTS[name]
    return PARAM_DEFAULTS.get(name)


def default_level(level: str, graph: str | None = None) -> LevelSpec:
    """The level a spec gets when it omits ``[space.<level>]`` (or only sets its ``graph``)."""
    graph = graph or DEFAULT_GRAPHS[level]
    names = GRAPH_MODELS.get(graph).param_names
    return LevelSpec(graph, FrozenMap({n: level_default(level, n) for n in names}))


@dataclass(frozen=True)
class DataSpec:
    """Where the training data comes from; validation is carved from the training split."""

    dataset: str = "digits"
    path: Path | None = None  # absolute; required for "idx", refused for "digits"
    val_fraction: float = 0.2
    limit: int | None = None
    classes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a plain-parameter space (``kind = "params"``)."""

    type: str  # float | int | categorical
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    choices: tuple[str | int | float | bool, ...] | None = None


@dataclass(frozen=True)
class SpaceSpec:
    """The search space: a NAGO hierarchy (``hnag``), RandWire (``rnag``) or plain parameters (``params``).

    ``rnag`` uses ``stage`` (one graph per stage, len(channel_ratios) stages) and ignores
    ``stage_ratios``, ``share_graphs``, ``conv_type``, ``ops`` and the three hnag levels; hnag ignores
    ``stage``. ``param_budget``, each ratio, ``head_width`` and each weight below is fixed or a searched
    Range:

    - ``param_budget``: the conv parameters the widths are scaled to (NAGO.md §1.6). Searching it (a
      log range, say 4k to 100k) lets one run's front span network sizes, not only structures.

    - ``stage_ratios``: the share of top-level nodes in each stage; all fixed, they sum to 1; with any
      entry searched they are relative weights that the generator normalises to sum to 1.
    - ``channel_ratios``: each stage's width relative to the first; ``head_width``: channels of the
      1x1 expansion before the classifier (0: none).
    - ``conv_type``: how every conv op is built (CONV_TYPES); a tuple is a searched categorical.
    - ``ops``: θ_op, relative weights of the bottom-level node operations (OP_NAMES), normalised by
      the generator; each level's ``merge`` likewise weighs MERGE_NAMES.
    """

    kind: str = "hnag"
    param_budget: int | Range = 20000
    stage_ratios: tuple[float | Range, ...] = (1 / 3, 1 / 3, 1 / 3)
    channel_ratios: tuple[float | Range, ...] = (1.0, 2.0, 4.0)
    head_width: int | Range = 1280
    share_graphs: bool = False
    conv_type: str | tuple[str, ...] = "normal"
    ops: Mapping[str, float | Range] = FrozenMap({"conv3x3": 1.0})
    top: LevelSpec = default_level("top")
    mid: LevelSpec = default_level("mid")
    bottom: LevelSpec = default_level("bottom")
    stage: LevelSpec = default_level(RNAG_LEVEL)
    params: Mapping[str, ParamSpec] = FrozenMap()

    def level(self, name: str) -> LevelSpec:
        """The level called ``name`` (top, mid or bottom; stage for rnag)."""
        return {"top": self.top, "mid": self.mid, "bottom": self.bottom, RNAG_LEVEL: self.stage}[name]

    @property
    def levels(self) -> tuple[str, ...]:
        """The level tables this kind of space uses."""
        return {"hnag": LEVELS, "rnag": (RNAG_LEVEL,)}.get(self.kind, ())


OPTIMIZER_NAMES = ("sgd", "adamw")
#: ``lr`` and ``weight_decay`` when the spec leaves them out, per optimizer.
OPTIMIZER_DEFAULTS = {"sgd": {"lr": 0.05, "weight_decay": 5e-4}, "adamw": {"lr": 2e-3, "weight_decay": 0.05}}
#: [train] keys that only SGD uses.
SGD_ONLY_KEYS = ("momentum", "nesterov")


@dataclass(frozen=True)
class TrainSpec:
    """How each sampled network is trained (nago_spec.train.train); ``epochs`` may be fractional.

    ``optimizer``: "sgd" (``momentum``, ``nesterov``) or "adamw"; ``lr`` and ``weight_decay``
    default per optimizer (OPTIMIZER_DEFAULTS). The rate warms up linearly over ``warmup_epochs``,
    then follows a cosine to 0. Augmentation of the training batches: ``crop_padding`` (random crop
    of the zero-padded image), ``flip`` (horizontal, where the data allow it), ``cutout`` (side of a
    square set to the mean). ``channels_last``: true, false or "auto" (where it pays).
    ``max_seconds`` caps each architecture's training time. ``precision``: "auto" (bf16 autocast on a
    GPU that supports it, fp32 elsewhere), "fp32", "bf16" or "fp16" (a GPU's, with a gradient scaler).
    ``deterministic``: bit-reproducible training on a GPU (deterministic kernels, no autotuning).
    """

    epochs: float = 2.0
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0
    channels_last: bool | str = "auto"
    samples_per_point: int = 1
    max_seconds: float | None = None
    precision: str = "auto"
    deterministic: bool = False




@dataclass(frozen=True)
class SearchSpec:
    """The strategy and its budget, in evaluations (with ``fidelity``: in full-budget equivalents,
    an evaluation at budget b costing b / fidelity.max).

    ``options`` are the strategy's own (its class's ``default_options`` names them), passed to its
    constructor; those left out keep the strategy's defaults.

    ``record``: built-in objectives measured and stored with every trial (trials.csv) but never shown
    to the strategy, e.g. ``test_error`` to study a search on held-out data without selecting on it.

    ``warm_start``: run directories of earlier searches over the same space and objectives; their
    completed trials are told to the strategy before it first asks (nago_spec.warm).

    ``synchronous``: each ask of ``batch`` points waits until every trial before it has finished and
    been told, in trial order, so a run's trials are those of the same seed with one worker. Off,
    a free worker gets a new point at once, proposed with the running ones as pending.
    """

    strategy: str = "bo"
    budget: int = 20
    initial: int = 8
    batch: int = 2
    options: Mapping[str, Any] = FrozenMap()
    fidelity: Fidelity | None = None
    record: tuple[str, ...] = ()
    synchronous: bool = False
    warm_start: tuple[Path, ...] = ()


@dataclass(frozen=True)
class RunSpec:
    """Where and how trials run: in-process, in a pool of worker processes, or as Ray tasks.

    ``trial_timeout``: seconds a trial may take before its worker is killed and the trial FAILED.
    ``max_retries``: how many times a trial whose worker died (killed, segfault, out of memory) is
    re-queued before it is FAILED. ``address``, ``num_cpus`` and ``num_gpus`` are Ray's: the cluster
    to join (None starts a local Ray) and the resources each trial claims (a fraction of a GPU packs
    several small networks on one). ``device``: where networks train ("auto", "cpu", "cuda",
    "cuda:N", "mps"; nago_spec.device); ``workers_per_device``: process-backend workers per GPU.
    """

    backend: str = "process"
    workers: int | None = None  # None: GPUs x workers_per_device on CUDA, else the cores (Ray: CPUs / num_cpus)
    trial_timeout: float | None = None
    max_retries: int = 1
    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    device: str = "auto"
    workers_per_device: int = 1


SELECT_NAMES = ("pareto", "top")


@dataclass(frozen=True)
class ExportSpec:
    """The final evaluation (NAGO.md §3): the chosen generator points, ``samples`` architectures
    each, trained for ``final_epochs`` with augmentation, tested, and written to ONNX.

    ``select``: "pareto" (the Pareto set, best first by ``order_by``) or "top" (the best complete,
    feasible trials by ``order_by``); ``max_models`` caps the points. ``batch_size``, ``lr``,
    ``warmup_epochs`` and the augmentation (``crop_padding``, ``flip``, ``cutout``; the paper's final
    protocol uses cutout 16 on 32x32 images) default to [train]'s; Spec.final_train() resolves them.
    ``latency``: time each model in onnxruntime and torch. ``max_seconds`` caps each model's final
    training; the schedule then follows the time spent, as [train].max_seconds does in the search.
    ``full_data``: train the final models on the whole training split, not [data].limit's subsample
    (the validation split is then carved from the whole split, with the same fraction and seed).
    """

    onnx: bool = True
    final_epochs: float = 5.0
    samples: int = 3
    select: str = "pareto"
    order_by: str | None = None  # an objective's name; None: the first objective
    max_models: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    warmup_epochs: float | None = None
    crop_padding: int | None = None
    flip: bool | None = None
    cutout: int | None = None
    latency: bool = True
    opset: int = 20
    max_seconds: float | None = None
    full_data: bool = False


@dataclass(frozen=True)
class Spec:
    """A whole validated spec. ``path`` is absolute; relative paths in the file were resolved against it."""

    path: Path
    name: str
    version: int = SUPPORTED_VERSION
    seed: int = 0
    data: DataSpec = DataSpec()
    space: SpaceSpec = SpaceSpec()
    train: TrainSpec = TrainSpec()
    objectives: tuple[ObjectiveInfo, ...] = ()
    constraints: tuple[ConstraintInfo, ...] = ()
    search: SearchSpec = SearchSpec()
    run: RunSpec = RunSpec()
    export: ExportSpec = ExportSpec()

    @property
    def base_dir(self) -> Path:
        """The spec file's directory, against which relative paths and callables resolve."""
        return self.path.parent

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as plain TOML-able data: every default filled in, every path absolute."""
        return {
            "version": self.version,
            "name": self.name,
            "seed": self.seed,
            "data": _fields_dict(self.data),
            "space": _space_dict(self.space),
            "train": _fields_dict(self.train),
            "objectives": [_objective_dict(o, self.space.kind) for o in self.objectives],
            "constraints": [_constraint_dict(c) for c in self.constraints],
            "search": _search_dict(self.search),
            "run": _fields_dict(self.run),
            "export": _fields_dict(self.export),
        }

    def final_train(self) -> TrainSpec:
        """[train] as the final evaluation uses it: [export]'s epochs, and its batch size, rate, warm-up
        and augmentation where given; its own time cap (``[export].max_seconds``, none by default),
        one architecture per call."""
        e = self.export
        given = {k: getattr(e, k) for k in ("batch_size", "lr", "warmup_epochs", "crop_padding", "flip", "cutout")}
        return dataclasses.replace(
            self.train, epochs=e.final_epochs, max_seconds=e.max_seconds, samples_per_point=1,
            **{k: v for k, v in given.items() if v is not None},
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base_dir: str | os.PathLike[str] | None = None) -> Spec:
        """A spec from a mapping laid out like the TOML file (tables as dicts, arrays of tables as lists
        of dicts), with the same validation and one-line errors (``<dict>: [train].epochs = ...``).
        Tuples are read as lists and Paths as strings; a None value counts as absent. Relative paths
        resolve against ``base_dir`` (default: the working directory); the name defaults to "spec".
        """
        if not isinstance(data, Mapping):
            raise SpecError([f"<dict>: a spec must be a mapping of its tables, not {type(data).__name__}"])
        return _validated(_as_toml_data(data), None, "<dict>", _virtual_file(base_dir))

    def with_function(self, fn: Callable[..., Any]) -> Spec:
        """This plain-parameter spec with ``fn`` measuring every objective that names no callable
        (``fn(params)`` returns a number, or a mapping of objective names to numbers). Raises
        SpecError where the space is not plain parameters or every objective has its callable."""
        if not callable(fn):
            raise SpecError(f"{self.path}: the objective function must be callable, not {type(fn).__name__}")
        if self.space.kind != "params":
            raise SpecError(f"{self.path}: [space].kind = {self.space.kind!r}: a function objective needs a "
                            'plain-parameter space (kind = "params"); network objectives are callables with a context')
        open_ = [i for i, o in enumerate(self.objectives) if o.callable is None]
        if not open_:
            raise SpecError(f"{self.path}: every objective already names its callable; leave `callable` out of "
                            "those the function measures")
        objectives = tuple(dataclasses.replace(o, callable=fn) if i in open_ else o
                           for i, o in enumerate(self.objectives))
        return dataclasses.replace(self, objectives=objectives)

    def missing_callables(self) -> list[str]:
        """The keys of the plain-parameter objectives still waiting for a function (``with_function``)."""
        if self.space.kind != "params":
            return []
        return [f"[objectives][{i}].callable" for i, o in enumerate(self.objectives) if o.callable is None]

    def require_callables(self) -> None:
        """Raise SpecError, one line naming the first objective without a callable, where any waits
        for a function: a spec run from the command line must name every callable."""
        missing = self.missing_callables()
        if missing:
            raise SpecError(f"{self.path}: {missing[0]}: missing: a plain-parameter objective needs a callable "
                            "('module:function' or 'file.py:function'), or a function given to Study.optimize")

    def with_overrides(self, overrides: Mapping[str, Any]) -> Spec:
        """This spec with ``overrides`` (nested like the file; None values absent) merged over it and
        validated again; errors name this spec's file."""
        return _validated(self.to_dict(), overrides, str(self.path), self.path).with_functions_of(self)

    def with_functions_of(self, other: Spec) -> Spec:
        """This spec with the Python functions ``other``'s objectives hold (which no file keeps) given
        back to the objectives of the same name that wait for one."""
        fns = {o.name: o.callable for o in other.objectives if o.callable is not None and not isinstance(o.callable, str)}
        if not fns or self.space.kind != "params":
            return self
        return dataclasses.replace(self, objectives=tuple(
            dataclasses.replace(o, callable=fns[o.name]) if o.callable is None and o.name in fns else o
            for o in self.objectives))

    def search_dict(self) -> dict[str, Any]:
        """to_dict() less what does not change the search (``name``, ``run``, ``export``) and less the
        [train] keys added since runs were first stored when they hold their defaults, so that a run
        directory of an older version still resumes."""
        d = self.to_dict()
        for key in ("name", "run", "export"):
            d.pop(key)
        for key, default in _LATER_TRAIN_DEFAULTS.items():
            if d["train"].get(key) == default:
                del d["train"][key]
        return d

    def key(self, scope: str = "search") -> str:
        """The spec's identity, at the scope a caller compares:

        - ``"search"``: sha256 of search_dict(), everything that changes the search (the ONNX
          models' ``nago.spec_hash``, the store's ``spec_hash``);
        - ``"resume"``: search_dict() less the budget and the warm-start runs, as canonical JSON,
          what a run directory must keep to be continued (JSON, so that a refusal can name the
          keys that changed: changed_keys);
        - ``"export"``: sha256 (16 hex digits) of the resume key and [export], the final-training
          settings the exported models of a run are stored under.

        The values are those earlier versions stored, so old runs resume and keep their models.
        """
        d = self.search_dict()
        if scope == "search":
            return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        d["search"].pop("budget", None)
        d["search"].pop("warm_start", None)
        resume = json.dumps(d, sort_keys=True)
        if scope == "resume":
            return resume
        if scope == "export":
            blob = resume + json.dumps(self.to_dict()["export"], sort_keys=True)
            return hashlib.sha256(blob.encode()).hexdigest()[:16]
        raise ValueError(f"key: scope must be 'search', 'resume' or 'export', not {scope!r}")


def changed_keys(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested mappings (to_dict() layouts), sorted."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += changed_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


#: [train] keys added after the first stored runs, with their defaults (Spec.search_dict).
_LATER_TRAIN_DEFAULTS = {"precision": "auto", "deterministic": False}


def _plain(value: Any) -> Any:
    """A spec value as TOML-able data (TOML has no null: callers drop None)."""
    if isinstance(value, Range):
        if value.log:
            return {"low": value.low, "high": value.high, "log": True}
        return [value.low, value.high]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _fields_dict(obj: Any) -> dict[str, Any]:
    return {
        f.name: _plain(getattr(obj, f.name))
        for f in dataclasses.fields(obj)
        if getattr(obj, f.name) is not None
    }


def _search_dict(s: SearchSpec) -> dict[str, Any]:
    d = _fields_dict(s)
    if not s.options:  # left out, so specs without options keep the key they had before options
        d.pop("options")
    if s.fidelity is None:
        d.pop("fidelity", None)
    else:
        d["fidelity"] = _fields_dict(s.fidelity)
    if not s.record:  # likewise
        d.pop("record")
    else:
        d["record"] = list(s.record)
    if not s.synchronous:  # likewise
        d.pop("synchronous")
    if not s.warm_start:  # likewise
        d.pop("warm_start")
    else:
        d["warm_start"] = [str(p) for p in s.warm_start]
    return d


def _objective_dict(o: ObjectiveInfo, kind: str) -> dict[str, Any]:
    d = _fields_dict(o)
    if o.callable is not None and not isinstance(o.callable, str):
        # a Python function is the caller's, given again to each Study.optimize: no part of the file or its keys
        d.pop("callable")
    elif o.callable is None and kind != "params":
        d.pop("cheap")  # a built-in's cost is its own (the key is refused without a callable)
    return d


def _constraint_dict(c: ConstraintInfo) -> dict[str, Any]:
    d = _fields_dict(c)
    if c.callable is None:  # as for objectives; and specs without the keys keep their hash
        d.pop("cheap")
    return d


def _space_dict(s: SpaceSpec) -> dict[str, Any]:
    if s.kind == "params":
        return {"kind": s.kind, "params": {n: _param_dict(p) for n, p in s.params.items()}}
    dropped = ("params", *LEVELS, RNAG_LEVEL) + (HNAG_ONLY_KEYS if s.kind == "rnag" else ())
    d = {k: v for k, v in _fields_dict(s).items() if k not in dropped}
    for name in s.levels:
        level = s.level(name)
        d[name] = {"graph": level.graph, "merge": _plain(level.merge), **_plain(level.params)}
    return d


def _param_dict(p: ParamSpec) -> dict[str, Any]:
    if p.type == "categorical":
        return {"type": p.type, "choices": _plain(p.choices)}
    return {"type": p.type, "low": p.low, "high": p.high, "log": p.log}


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------


def load_spec(
    path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None, *,
    text: str | None = None, base_dir: str | os.PathLike[str] | None = None,
) -> Spec:
    """Read, merge ``overrides`` over, and validate a spec file, or the TOML ``text`` of one.

    ``overrides`` is nested like the file (``{"search": {"budget": 10}}``); a None value means "not
    given" so a command line can pass its unset options through. A spec given as ``text`` resolves
    its relative paths against ``base_dir`` (default: the working directory) and is named "spec"
    unless it says otherwise. Raises SpecError carrying one line per problem found anywhere in the
    spec, each starting with the file's name (``<text>`` for text).
    """
    if (path is None) == (text is None):
        raise TypeError("load_spec takes a path or text=, not both or neither")
    if text is not None:
        if not isinstance(text, str):
            raise SpecError([f"<text>: must be TOML text (a str), not {type(text).__name__}"])
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError([f"<text>: invalid TOML: {exc}"]) from None
        return _validated(raw, overrides, "<text>", _virtual_file(base_dir))
    shown = str(path)
    file = Path(path).resolve()
    if not file.is_file():
        what = "no such file"
        if file.is_dir():
            what = "a directory, not a spec file" + (
                f" (to resume the run in it, give {Path(shown) / 'spec.toml'})" if (file / "spec.toml").is_file() else "")
        raise SpecError([f"{shown}: {what}"])
    try:
        with open(file, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([f"{shown}: invalid TOML: {exc}"]) from None
    except UnicodeDecodeError:
        raise SpecError([f"{shown}: invalid TOML: the file is not UTF-8 text"]) from None
    return _validated(raw, overrides, shown, file)


def _virtual_file(base_dir: str | os.PathLike[str] | None) -> Path:
    """Where a spec given as text or a dict stands: a file "spec.toml" in ``base_dir`` (default: the
    working directory), against which its relative paths resolve."""
    return Path(base_dir or ".").resolve() / "spec.toml"


def _validated(raw: dict[str, Any], overrides: Mapping[str, Any] | None, shown: str, file: Path) -> Spec:
    if overrides:
        raw = _merge(raw, overrides)
    report = _Report(shown)
    spec = _build_spec(report, raw, file)
    if report.lines:
        raise SpecError(report.lines)
    return spec


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = _as_toml_data(value)
    return out


def _as_toml_data(value: Any) -> Any:
    """Python values as tomllib would have parsed them (tuples -> lists, mappings -> dicts, Paths ->
    strings; None entries of a mapping dropped)."""
    if isinstance(value, Mapping):
        return {str(k): _as_toml_data(v) for k, v in value.items() if v is not None}
    if isinstance(value, (tuple, list)):
        return [_as_toml_data(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# --- the generic checker ----------------------------------------------------------------------------


class _Invalid(Exception):
    """A rule's verdict on one value: the text after ``key = value:``."""


Rule = Callable[[Any], Any]  # returns the normalised value or raises _Invalid
_ABSENT = object()
_TOP_KEYS = ("version", "name", "seed")


class _Report:
    """Collects the error lines of one file."""

    def __init__(self, shown: str):
        self.shown = shown
        self.lines: list[str] = []

    def add(self, where: str, message: str, value: Any = _ABSENT) -> None:
        shown_value = "" if value is _ABSENT else f" = {_show(value)}"
        self.lines.append(f"{self.shown}: {where}{shown_value}: {message}")

    def check(
        self,
        prefix: str,
        table: Mapping[str, Any],
        rules: Mapping[str, Rule],
        *,
        section: str | None = None,
        known: tuple[str, ...] = (),
        required: Mapping[str, str] | None = None,
        hint: str = "",
    ) -> dict[str, Any]:
        """Apply ``rules`` to ``table``'s keys; report unknown keys and bad or missing values.

        ``known`` keys are valid but checked by the caller (sub-tables such as [space.top]); ``hint``
        is appended to unknown-key lines.
        Returns the valid values only, so a dataclass built from them falls back on its defaults
        and building can go on to find the file's other problems.
        """
        valid = [*rules, *known]
        for key, value in table.items():
            if key not in valid:
                self.unknown(prefix, section, key, value, valid, hint)
        values: dict[str, Any] = {}
        for key, rule in rules.items():
            if key not in table:
                if required and key in required:
                    self.add(_at(prefix, key), f"missing: {required[key]}")
                continue
            try:
                values[key] = rule(table[key])
            except _Invalid as exc:
                self.add(_at(prefix, key), str(exc), table[key])
        return values

    def unknown(self, prefix: str, section: str | None, key: str, value: Any, valid: list[str],
                hint: str = "") -> None:
        if section is not None and _is_table(value):
            name = f"{section}.{key}" if section else key
            choices = [f"{section}.{v}" if section else v for v in valid]
            self.add(f"[{name}]", "unknown section" + did_you_mean(name, choices))
            return
        if prefix and key in _TOP_KEYS:
            hint += f" ({key} is a top-level key: it must come before the first [section])"
        else:
            hint = did_you_mean(key, valid) + hint
        self.add(_at(prefix, key), "unknown key" + hint, value)

    def table(self, where: str, value: Any, header: str) -> dict[str, Any]:
        """``value`` if it is a table, else report it and carry on with an empty one."""
        if isinstance(value, dict):
            return value
        self.add(where, f"must be a table ({header})", value)
        return {}


def _at(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    )


def _show(value: Any, limit: int = 120) -> str:
    """A value as TOML-ish text for an error line."""
    try:
        text = _toml_value(value)
    except TypeError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _num(x: float) -> str:
    return f"{x:g}"


def _bounds(gt: float | None = None, ge: float | None = None, lt: float | None = None,
            le: float | None = None) -> str:
    parts = [f"{op} {_num(x)}" for op, x in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if x is not None]
    return " " + " and ".join(parts) if parts else ""


def _within(x: float, gt: float | None, ge: float | None, lt: float | None, le: float | None) -> bool:
    return not (
        (gt is not None and x <= gt)
        or (ge is not None and x < ge)
        or (lt is not None and x >= lt)
        or (le is not None and x > le)
    )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # a bool is never an int here


def _integer(ge: float | None = None, le: float | None = None) -> Rule:
    text = "must be an integer" + _bounds(ge=ge, le=le)

    def rule(v: Any) -> int:
        if not _is_int(v) or not _within(v, None, ge, None, le):
            raise _Invalid(text)
        return v

    return rule


def _number(gt: float | None = None, ge: float | None = None, lt: float | None = None,
            le: float | None = None) -> Rule:
    bounds = _bounds(gt, ge, lt, le)

    def rule(v: Any) -> float:
        if not (_is_int(v) or isinstance(v, float)):  # an int is accepted where a float is expected
            raise _Invalid("must be a number" + bounds)
        if not math.isfinite(v):
            raise _Invalid("must be a finite number" + bounds)
        if not _within(v, gt, ge, lt, le):
            raise _Invalid("must be" + bounds)
        return float(v)

    return rule


def _boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Invalid("must be true or false")
    return v


def _text(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _Invalid("must be a non-empty string")
    return v


def _choice(kind: str, names: tuple[str, ...] | list[str]) -> Rule:
    def rule(v: Any) -> str:
        if not isinstance(v, str):
            raise _Invalid(f"must be a string naming a {kind}; valid: {', '.join(names)}")
        if v not in names:
            raise _Invalid(f"unknown {kind}{did_you_mean(v, list(names))}; valid: {', '.join(names)}")
        return v

    return rule


def _registered(registry: Registry[Any]) -> Rule:
    """A name the registry holds (a plug-in's too); a plug-in that failed to load is named."""

    def rule(v: Any) -> str:
        if not isinstance(v, str):
            raise _Invalid(f"must be a string naming a {registry.kind}; valid: {', '.join(registry.names())}")
        if v not in registry:
            names = registry.names()
            raise _Invalid(registry.load_error(v) or
                           f"unknown {registry.kind}{did_you_mean(v, names)}; valid: {', '.join(names)}")
        return v

    return rule


def _run_name(v: Any) -> str:
    # The name becomes the run directory runs/<name>, so it cannot climb out of it.
    if not isinstance(v, str) or not v.strip() or v in (".", "..") or re.search(r"[/\\]", v):
        raise _Invalid("must be a non-empty name without '/' (it names the run directory runs/<name>)")
    return v


def _version(v: Any) -> int:
    if not _is_int(v) or v != SUPPORTED_VERSION:
        raise _Invalid(f"only version {SUPPORTED_VERSION} is supported")
    return v


def _existing_path(base: Path) -> Rule:
    def rule(v: Any) -> Path:
        if not isinstance(v, str) or not v or "\x00" in v:
            raise _Invalid("must be a path (a string without NUL characters), relative to the spec file or absolute")
        resolved = (base / Path(v).expanduser()).resolve()
        try:
            exists = resolved.exists()
        except OSError as exc:  # a name too long for the file system, ...
            raise _Invalid(f"not a usable path: {exc.strerror or exc}") from None
        if not exists:
            raise _Invalid(f"no such file or directory ({resolved})")
        return resolved

    return rule


#: What ``[data].path`` must be for each data set that takes one: (a directory, a file, the wording).
_DATA_PATHS = {
    "idx": (True, False, "a directory of MNIST-format IDX files"),
    "npz": (False, True, "an .npz file with arrays x and y"),
    "image-folder": (True, True, "a directory or .tar.gz of split/class/image files"),
}


def _class_names(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not v or not all(isinstance(c, str) and c for c in v):
        raise _Invalid("must be a non-empty list of class names (strings)")
    if len(set(v)) != len(v):
        raise _Invalid("class names must be distinct")
    return tuple(v)


_STAGE_RATIOS = f"must be a list of 1 to {MAX_STAGES} numbers > 0 summing to 1"
_SEARCHED_RATIOS = "[low, high] pairs with low > 0 (searched)"


def _stage_ratios(v: Any) -> tuple[float | Range, ...]:
    ratios = _ratios(v, f"{_STAGE_RATIOS} (fixed), or of numbers > 0 and {_SEARCHED_RATIOS}")
    if not 1 <= len(ratios) <= MAX_STAGES:
        raise _Invalid(f"{_STAGE_RATIOS}, but has {len(ratios)}")
    # With any entry searched, all are relative weights that the generator normalises.
    if not any(isinstance(r, Range) for r in ratios) and abs(sum(ratios) - 1.0) > 1e-6:
        raise _Invalid(f"must sum to 1, but sums to {sum(ratios):g}")
    return ratios


def _channel_ratios(v: Any) -> tuple[float | Range, ...]:
    return _ratios(v, f"must be a list of numbers > 0 (fixed) or {_SEARCHED_RATIOS}")


def _ratios(v: Any, text: str) -> tuple[float | Range, ...]:
    """One entry per stage, each a number > 0 (fixed) or a [low, high] pair with low > 0 (searched)."""
    if not isinstance(v, list):
        raise _Invalid(text)
    entry = _scalar_or_range(_number(gt=0))
    out = []
    for i, x in enumerate(v, 1):
        try:
            out.append(entry(x))
        except _Invalid as exc:  # a bad pair is pinpointed; a bad scalar breaks the list's shape
            raise _Invalid(f"stage {i}: {exc}" if isinstance(x, (list, dict)) else text) from None
    return tuple(out)


def _conv_type(v: Any) -> str | tuple[str, ...]:
    """A conv type (fixed) or a list of distinct ones (searched; one name alone is fixed)."""
    valid = f"valid: {', '.join(CONV_TYPES)}"
    if isinstance(v, str):
        return _choice("conv type", CONV_TYPES)(v)
    if not isinstance(v, list) or not v or not all(isinstance(n, str) for n in v):
        raise _Invalid(f"must be a conv type (fixed) or a non-empty list of them (searched); {valid}")
    for name in v:
        if name not in CONV_TYPES:
            raise _Invalid(f"unknown conv type '{name}'{did_you_mean(name, CONV_TYPES)}; {valid}")
    if len(set(v)) != len(v):
        raise _Invalid("conv types must be distinct")
    return v[0] if len(v) == 1 else tuple(v)


def _range(scalar: Rule, low: Any, high: Any, log: bool, strict: bool = False) -> Range:
    """A [low, high] pair whose ends each pass ``scalar``; ``strict``: low < high rather than <=."""
    ends = []
    for label, v in (("low", low), ("high", high)):
        try:
            ends.append(scalar(v))
        except _Invalid as exc:
            raise _Invalid(f"{label} {exc}") from None
    lo, hi = ends
    if lo > hi or (strict and lo == hi):
        op = "<" if strict else "<="
        raise _Invalid(f"low {op} high must hold, but got (low={lo!r}, high={hi!r})")
    if log and lo <= 0:
        raise _Invalid(f"a log scale needs low > 0, but got low={lo!r}")
    return Range(lo, hi, log)


def _graph_value(gp: GraphParam) -> Rule:
    """A level parameter: a scalar (fixed), a [low, high] pair or a {low, high, log} table (searched)."""
    if gp.kind is int:
        return _scalar_or_range(_integer(ge=gp.low, le=gp.high))
    return _scalar_or_range(_number(ge=gp.low, le=gp.high))


def _scalar_or_range(scalar: Rule) -> Rule:
    """A value passing ``scalar`` (fixed), or a [low, high] pair or {low, high, log} table of them (searched)."""
    shape = "must be a scalar (fixed) or a [low, high] pair (searched)"

    def rule(v: Any) -> int | float | Range:
        if isinstance(v, list):
            if len(v) != 2:
                raise _Invalid(shape)
            return _range(scalar, v[0], v[1], log=False)
        if isinstance(v, dict):
            extra = set(v) - {"low", "high", "log"}
            if extra or "low" not in v or "high" not in v:
                raise _Invalid(shape + ", or a { low, high, log } table")
            return _range(scalar, v["low"], v["high"], log=_boolean(v.get("log", False)))
        return scalar(v)

    return rule


# --- sections -----------------------------------------------------------------------------------------


_SECTIONS = ("data", "space", "train", "objectives", "constraints", "search", "run", "export")


def _build_spec(rep: _Report, raw: dict[str, Any], file: Path) -> Spec:
    base = file.parent
    top = rep.check(
        "",
        raw,
        {"version": _version, "name": _run_name, "seed": _integer(ge=0)},
        section="",
        known=_SECTIONS,
        required={"version": f"every spec must declare version = {SUPPORTED_VERSION}"},
    )
    data = _data(rep, rep.table("data", raw.get("data", {}), "[data]"), base)
    space = _space(rep, rep.table("space", raw.get("space", {}), "[space]"))
    train = _train(rep, rep.table("train", raw.get("train", {}), "[train]"))
    objectives = _objectives(rep, raw, base, space.kind)
    constraints = _constraints(rep, raw, base)
    search = _search(rep, rep.table("search", raw.get("search", {}), "[search]"), base)
    run = _simple(rep, "run", raw, RunSpec, {
        "backend": _registered(BACKENDS),
        "workers": _integer(ge=1),
        "trial_timeout": _number(gt=0),
        "max_retries": _integer(ge=0),
        "address": _text,
        "num_cpus": _number(gt=0),
        "num_gpus": _number(ge=0),
        "device": _device,
        "workers_per_device": _integer(ge=1),
    })
    export = _simple(rep, "export", raw, ExportSpec, {
        "onnx": _boolean,
        "final_epochs": _number(gt=0),
        "samples": _integer(ge=1),
        "select": _choice("selection", SELECT_NAMES),
        "order_by": _text,
        "max_models": _integer(ge=1),
        "batch_size": _integer(ge=1),
        "lr": _number(gt=0),
        "warmup_epochs": _number(ge=0),
        "crop_padding": _integer(ge=0),
        "flip": _boolean,
        "cutout": _integer(ge=0),
        "latency": _boolean,
        "opset": _integer(ge=OPSET_RANGE[0], le=OPSET_RANGE[1]),
        "max_seconds": _number(gt=0),
        "full_data": _boolean,
    })
    if search.record and space.kind == "params":
        rep.add("[search].record", "needs a network space (kind = \"hnag\" or \"rnag\"): the built-in objectives "
                "measure trained networks", list(search.record))
    if search.fidelity is not None and search.warm_start:
        rep.add("[search].warm_start", "not with [search.fidelity]: the earlier runs' trials have no Hyperband "
                "bracket to join", [str(p) for p in search.warm_start])
    if search.fidelity is not None and space.kind == "params":
        rep.add("[search.fidelity]", "needs a network space (kind = \"hnag\" or \"rnag\"): the budget is "
                "training epochs or data")
    if search.fidelity is not None and search.fidelity.on == "epochs" and train.warmup_epochs >= search.fidelity.min:
        rep.add("[train].warmup_epochs", f"must be less than the smallest budget, [search.fidelity].min = "
                f"{search.fidelity.min:g} epochs", train.warmup_epochs)
    final = train.warmup_epochs if export.warmup_epochs is None else export.warmup_epochs
    if final >= export.final_epochs:
        message = f"must be less than final_epochs = {export.final_epochs:g}"
        if export.warmup_epochs is None:
            rep.add("[export].warmup_epochs", f"{message} (it defaults to [train]'s, {final:g})")
        else:
            rep.add("[export].warmup_epochs", message, export.warmup_epochs)
    names = [o.name for o in objectives]
    for name in sorted(set(search.record) & set(names)):
        rep.add("[search].record", f"{name!r} is already an objective (every objective is stored)", list(search.record))
    if export.order_by is not None and names and export.order_by not in names:
        rep.add("[export].order_by", "not an objective of this spec"
                f"{did_you_mean(export.order_by, names)}; valid: {', '.join(names)}", export.order_by)
    return Spec(
        path=file,
        name=top.get("name", file.stem),
        version=top.get("version", SUPPORTED_VERSION),
        seed=top.get("seed", 0),
        data=data,
        space=space,
        train=train,
        objectives=objectives,
        constraints=constraints,
        search=search,
        run=run,
        export=export,
    )


def _simple(rep: _Report, name: str, raw: Mapping[str, Any], cls: type, rules: Mapping[str, Rule]) -> Any:
    """A section whose keys are independent: the dataclass's defaults fill in what is absent."""
    table = rep.table(name, raw.get(name, {}), f"[{name}]")
    return cls(**rep.check(f"[{name}]", table, rules, section=name))


def _train(rep: _Report, table: dict[str, Any]) -> TrainSpec:
    values = rep.check("[train]", table, {
        "epochs": _number(gt=0),
        "batch_size": _integer(ge=1),
        "optimizer": _choice("optimizer", OPTIMIZER_NAMES),
        "lr": _number(gt=0),
        "momentum": _number(ge=0, lt=1),
        "nesterov": _boolean,
        "weight_decay": _number(ge=0),
        "warmup_epochs": _number(ge=0),
        "label_smoothing": _number(ge=0, lt=1),
        "crop_padding": _integer(ge=0),
        "flip": _boolean,
        "cutout": _integer(ge=0),
        "channels_last": _channels_last,
        "samples_per_point": _integer(ge=1),
        "max_seconds": _number(gt=0),
        "precision": _choice("precision", PRECISIONS),
        "deterministic": _boolean,
    }, section="train")
    optimizer = values.get("optimizer", TrainSpec.optimizer)
    if optimizer != "sgd":
        for key in SGD_ONLY_KEYS:
            if key in table:
                rep.add(f"[train].{key}", f'only used with optimizer = "sgd", not "{optimizer}"', table[key])
    for key, default in OPTIMIZER_DEFAULTS.get(optimizer, {}).items():
        values.setdefault(key, default)
    epochs = values.get("epochs", TrainSpec.epochs)
    if values.get("warmup_epochs", 0.0) >= epochs:
        rep.add("[train].warmup_epochs", f"must be less than epochs = {epochs:g} (the warm-up is part of "
                "training)", table["warmup_epochs"])
    return TrainSpec(**values)


def _device(v: Any) -> str:
    if isinstance(v, str) and (v in DEVICE_KINDS or re.fullmatch(r"cuda:\d+", v)):
        return v
    raise _Invalid('must be "auto" (a GPU when torch sees one, else the CPU), "cpu", "cuda" (every GPU), '
                   '"cuda:N" or "mps"')


def _channels_last(v: Any) -> bool | str:
    if isinstance(v, bool) or v == "auto":
        return v
    raise _Invalid('must be true, false or "auto" (where it pays: every conv at least 4 channels wide)')


def _search(rep: _Report, table: dict[str, Any], base: Path) -> SearchSpec:
    values = rep.check("[search]", table, {
        "strategy": _registered(STRATEGIES),
        "budget": _integer(ge=1),
        "initial": _integer(ge=1),
        "batch": _integer(ge=1),
        "record": _recorded,
        "synchronous": _boolean,
        "warm_start": _run_dirs(base),
    }, section="search", known=("options", "fidelity"))
    if "fidelity" in table:
        fidelity = _fidelity(rep, rep.table("[search].fidelity", table["fidelity"], "[search.fidelity]"))
        if fidelity is not None:
            values["fidelity"] = fidelity
    if "options" in table:
        options = rep.table("[search].options", table["options"], "[search.options]")
        if options and ("strategy" in values or "strategy" not in table):  # a bad strategy has no options to judge
            values["options"] = _search_options(rep, values.get("strategy", SearchSpec.strategy), options)
    return SearchSpec(**values)


def _run_dirs(base: Path) -> Rule:
    def rule(v: Any) -> tuple[Path, ...]:
        if not isinstance(v, list):
            raise _Invalid("must be a list of run directories (each with study.db and spec.toml)")
        dirs = tuple(_existing_path(base)(x) for x in v)
        for d in dirs:
            if not (d / "study.db").is_file() or not (d / "spec.toml").is_file():
                raise _Invalid(f"{d} is not a run directory (no study.db and spec.toml)")
        if len(set(dirs)) < len(dirs):
            raise _Invalid("names a run directory twice")
        return dirs

    return rule


def _recorded(v: Any) -> tuple[str, ...]:
    names = OBJECTIVES.names()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _Invalid(f"must be a list of built-in objective names; valid: {', '.join(names)}")
    for x in v:
        if x not in OBJECTIVES:
            raise _Invalid(f"unknown objective {x!r}{did_you_mean(x, names)}; valid: {', '.join(names)}")
    if len(set(v)) < len(v):
        raise _Invalid("names an objective twice")
    return tuple(v)


def _fidelity(rep: _Report, table: dict[str, Any]) -> Fidelity | None:
    values = rep.check("[search.fidelity]", table, {
        "min": _number(gt=0),
        "max": _number(gt=0),
        "eta": _integer(ge=2),
        "on": _choice("fidelity", FIDELITY_ON),
    }, section="search.fidelity", required={
        "min": "the smallest training budget (epochs, or a fraction of the data with on = \"data\")",
        "max": "the largest training budget, that of a full evaluation",
    })
    if "min" not in values or "max" not in values:
        return None
    if values["min"] > values["max"]:
        rep.add("[search.fidelity].min", f"must be <= max = {values['max']:g}", table["min"])
        return None
    if values.get("on", "epochs") == "data" and values["max"] > 1:
        rep.add("[search.fidelity].max", 'must be <= 1 with on = "data" (a fraction of the training split)',
                table["max"])
        return None
    return Fidelity(**values)


def _search_options(rep: _Report, strategy: str, table: dict[str, Any]) -> FrozenMap[str, Any]:
    """The options of ``table`` that ``strategy`` takes, each of its default's type (int and float mix only
    where the default is a float; a default of None takes a number); the others are reported."""
    # Imported here: the strategies pull in torch and gpytorch, which a spec without options never needs.
    from nago_spec.problem import ObjectiveInfo, Problem
    from nago_spec.space import FloatParam, SearchSpace
    from nago_spec.strategies import STRATEGIES

    cls = STRATEGIES.get(strategy)
    defaults = cls.default_options
    valid = list(defaults)
    out: dict[str, Any] = {}
    for key, value in table.items():
        where = f"[search.options].{key}"
        if key not in defaults:
            rep.add(where, f"unknown option for strategy '{strategy}'{did_you_mean(key, valid)}; "
                           f"valid: {', '.join(valid) or '(none)'}", value)
            continue
        try:
            out[key] = _option_value(defaults[key])(value)
        except _Invalid as exc:
            rep.add(where, f"{exc} (strategy '{strategy}', default {_option_default(defaults[key])})", value)
    if len(out) == len(table):
        # Each value has the right type; its range is the strategy's to judge, as its constructor does,
        # here on a one-parameter problem, so that a run cannot fail on it later.
        probe = Problem(SearchSpace((FloatParam("x", 0.0, 1.0),)), (ObjectiveInfo("f", "minimize", False),))
        try:
            cls(probe, seed=0, options=out)
        except ValueError as exc:
            rep.add("[search.options]", str(exc), table)
    return FrozenMap(out)


def _option_value(default: Any) -> Rule:
    """The rule for an option whose default is ``default``: values of the same TOML scalar type."""
    if isinstance(default, bool):
        return _boolean
    if _is_int(default):
        return _integer()
    if isinstance(default, float):
        return _number()
    if isinstance(default, str):
        return _text
    if default is None:
        return _number_as_given
    raise TypeError(f"a strategy option's default must be a TOML scalar or None, not {default!r}")


def _number_as_given(v: Any) -> int | float:
    """A finite number, kept an int when it is one."""
    _number()(v)
    return v


def _option_default(default: Any) -> str:
    return "none" if default is None else _show(default)


def _data(rep: _Report, table: dict[str, Any], base: Path) -> DataSpec:
    values = rep.check("[data]", table, {
        "dataset": _registered(DATASETS),
        "path": _existing_path(base),
        "val_fraction": _number(gt=0, lt=1),
        "limit": _integer(ge=10),
        "classes": _class_names,
    }, section="data")
    dataset = values.get("dataset", DataSpec.dataset)
    path = values.get("path")
    if dataset == "digits" and "path" in table:
        rep.add("[data].path", 'not allowed with dataset = "digits" (it ships with scikit-learn)',
                table["path"])
    elif dataset in _DATA_PATHS:
        dir_ok, file_ok, what = _DATA_PATHS[dataset]
        if "path" not in table:
            rep.add("[data].path", f'missing: required with dataset = "{dataset}" ({what})')
        elif path is not None and not ((dir_ok and path.is_dir()) or (file_ok and path.is_file())):
            rep.add("[data].path", f'must be {what} with dataset = "{dataset}", but {path} is '
                    f'{"a directory" if path.is_dir() else "not a regular file"}', table["path"])
    return DataSpec(**values)


def _space(rep: _Report, table: dict[str, Any]) -> SpaceSpec:
    rules: dict[str, Rule] = {
        "kind": _choice("space kind", SPACE_KINDS),
        "param_budget": _scalar_or_range(_integer(ge=1)),
        "stage_ratios": _stage_ratios,
        "channel_ratios": _channel_ratios,
        "head_width": _scalar_or_range(_integer(ge=0)),
        "share_graphs": _boolean,
        "conv_type": _conv_type,
    }
    values = rep.check("[space]", table, rules, section="space",
                       known=(*LEVELS, RNAG_LEVEL, "params", "ops"))
    kind = table.get("kind", SpaceSpec.kind)

    def refuse(keys: Sequence[str], allowed: str) -> None:
        for key in keys:
            if key in table:
                is_level = key in (*LEVELS, RNAG_LEVEL)
                rep.add(f"[space.{key}]" if is_level else f"[space].{key}", f"only allowed with {allowed}",
                        _ABSENT if is_level else table[key])
                values.pop(key, None)

    hnag_only = (*HNAG_ONLY_KEYS, *LEVELS)
    if kind == "params":
        refuse([k for k in table if k in rules and k != "kind" and k not in HNAG_ONLY_KEYS],
               'kind = "hnag" or "rnag"')
        refuse(hnag_only, 'kind = "hnag"')
        refuse([RNAG_LEVEL], 'kind = "rnag"')
        if not table.get("params"):
            rep.add("[space.params]", 'missing: kind = "params" needs a non-empty [space.params] table')
    elif "params" in table:
        rep.add("[space.params]", 'only allowed with kind = "params"')
    if kind == "rnag":
        refuse(hnag_only, 'kind = "hnag"')
    elif kind == "hnag":
        refuse([RNAG_LEVEL], 'kind = "rnag"')
        if "ops" in table:
            ops = _weights(rep, "[space].ops", table["ops"], OP_NAMES, "operation", CONV_OP_NAMES,
                           f"needs a conv ({', '.join(CONV_OP_NAMES)}) whose weight can be > 0: "
                           "a bottom graph's output nodes may only be convs (NAGO.md §1.3)")
            if ops is not None:
                values["ops"] = ops

    stages = values.get("stage_ratios", SpaceSpec.stage_ratios)
    if kind == "rnag":
        # One stage per channel ratio (NAGO.md §4.2: RandWire's 3 stages at 1:2:4 by default).
        if "channel_ratios" in values and not 1 <= len(values["channel_ratios"]) <= MAX_STAGES:
            rep.add("[space].channel_ratios", f"must have 1 to {MAX_STAGES} entries (one per stage)",
                    table["channel_ratios"])
            values.pop("channel_ratios")
    elif "channel_ratios" not in table:
        # One doubling per stage, so changing the stage count alone stays valid.
        values["channel_ratios"] = tuple(2.0**i for i in range(len(stages)))
    elif "channel_ratios" in values and len(values["channel_ratios"]) != len(stages):
        rep.add(
            "[space].channel_ratios",
            f"must have one entry per stage, but stage_ratios has {len(stages)}",
            table["channel_ratios"],
        )
    if kind != "params":  # the level tables of another kind were refused above; no more noise
        for level in (RNAG_LEVEL,) if kind == "rnag" else LEVELS:
            level_table = rep.table(f"[space].{level}", table.get(level, {}), f"[space.{level}]")
            values[level] = _level(rep, level, level_table)
    if kind == "params":
        params = rep.table("[space].params", table.get("params", {}), "[space.params]")
        values["params"] = FrozenMap(
            {name: p for name, entry in params.items() if (p := _param(rep, name, entry)) is not None}
        )
    return SpaceSpec(**values)


def _level(rep: _Report, level: str, table: dict[str, Any]) -> LevelSpec:
    prefix = f"[space.{level}]"
    merge = LevelSpec.merge
    if "merge" in table:  # judged apart from the graph: it is no parameter of the graph model
        weights = _weights(rep, f"{prefix}.merge", table["merge"], MERGE_NAMES, "merge kind", MERGE_NAMES,
                           "needs a weight that can be > 0")
        merge = merge if weights is None else weights
    graph = table.get("graph", DEFAULT_GRAPHS[level])
    if not isinstance(graph, str) or graph not in GRAPH_MODELS:
        rule = _choice("graph model", GRAPH_MODELS.names())
        try:
            rule(graph)
        except _Invalid as exc:
            rep.add(f"{prefix}.graph", str(exc), graph)
        return dataclasses.replace(default_level(level), merge=merge)  # the params need a model
    model = GRAPH_MODELS.get(graph)
    rules: dict[str, Rule] = {"graph": lambda v: v}
    rules.update({gp.name: _graph_value(gp) for gp in model.params})
    takes = f" (graph '{graph}' takes: {', '.join(model.param_names)})"
    values = rep.check(prefix, table, rules, section=f"space.{level}", known=("merge",), hint=takes)
    params: dict[str, int | float | Range] = {}
    for gp in model.params:
        if gp.name in values:
            params[gp.name] = values[gp.name]
        elif gp.name not in table:
            default = level_default(level, gp.name)
            if default is None:
                rep.add(f"{prefix}.{gp.name}", f"missing: graph '{graph}' needs {gp.name} ({gp.doc})")
            else:
                params[gp.name] = default
    return LevelSpec(graph, FrozenMap(params), merge)


def _weights(rep: _Report, where: str, value: Any, names: tuple[str, ...], what: str,
             positive: tuple[str, ...], none_positive: str) -> FrozenMap[str, float | Range] | None:
    """A categorical distribution as relative weights >= 0, each fixed or a searched Range.

    ``value`` is a name (weight 1), a list of names (equal weights) or a table of weights, whose key
    order is kept. One of ``positive`` must be able to weigh > 0, else ``none_positive`` is reported.
    Returns None after reporting any problem.
    """
    valid = f"valid: {', '.join(names)}"
    if isinstance(value, (dict, list)) and not value:
        rep.add(where, f"needs at least one {what}", value)
        return None
    weights: dict[str, float | Range] = {}
    ok = True
    if isinstance(value, dict):
        weight = _scalar_or_range(_number(ge=0))
        for key, w in value.items():
            try:
                if key not in names:
                    raise _Invalid(f"unknown {what}{did_you_mean(key, names)}; {valid}")
                weights[key] = weight(w)
            except _Invalid as exc:
                rep.add(f"{where}.{key}", str(exc), w)
                ok = False
    else:
        listed = [value] if isinstance(value, str) else value
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            rep.add(where, f"must be a name, a list of names or a table of weights like "
                           f"{{ {names[0]} = 1.0, {names[1]} = [0, 1] }}; {valid}", value)
            return None
        for name in listed:
            if name not in names:
                rep.add(where, f"unknown {what} '{name}'{did_you_mean(name, names)}; {valid}", value)
                ok = False
        if len(set(listed)) != len(listed):
            rep.add(where, f"each {what} may be listed once", value)
            ok = False
        weights = dict.fromkeys(listed, 1.0)
    if not ok:
        return None
    if not any((w.high if isinstance(w, Range) else w) > 0 for n, w in weights.items() if n in positive):
        rep.add(where, none_positive, value)
        return None
    return FrozenMap(weights)


_PARAM_KEYS = ("type", "low", "high", "log", "choices")


def _param(rep: _Report, name: str, entry: Any) -> ParamSpec | None:
    where = f"[space.params].{name}"
    if not isinstance(entry, dict):
        rep.add(where, 'must be a table like { type = "float", low = 0.0, high = 1.0 }', entry)
        return None
    kind = entry.get("type")
    rules: dict[str, Rule] = {"type": _choice("parameter type", PARAM_TYPES)}
    if kind in ("float", "int"):
        scalar = _number() if kind == "float" else _integer()
        rules.update(low=scalar, high=scalar, log=_boolean)
    elif kind == "categorical":
        rules["choices"] = _choices
    # Keys of the other parameter types are known, and refused below with a clearer message.
    others = tuple(k for k in _PARAM_KEYS if k not in rules)
    values = rep.check(f"[space.params.{name}]", entry, rules, known=others,
                       required={"type": "every parameter needs a type: float, int or categorical"})
    if "type" not in values:
        return None  # the other keys cannot be judged without a type
    refused = [k for k in others if k in entry]
    for key in refused:
        rep.add(f"[space.params.{name}].{key}", f"not allowed for a {kind} parameter", entry[key])
    needed = ["choices"] if kind == "categorical" else ["low", "high"]
    missing = [k for k in needed if k not in entry]
    if missing:
        rep.add(where, f"missing: a {kind} parameter needs {' and '.join(missing)}", entry)
    if refused or missing or any(k not in values for k in needed):
        return None
    if kind == "categorical":
        return ParamSpec("categorical", choices=values["choices"])
    try:
        r = _range(lambda v: v, values["low"], values["high"], values.get("log", False),
                   strict=kind == "float")
    except _Invalid as exc:
        rep.add(where, str(exc), entry)
        return None
    return ParamSpec(kind, r.low, r.high, r.log)


def _choices(v: Any) -> tuple[str | int | float | bool, ...]:
    if not isinstance(v, list) or not v or not all(isinstance(c, (str, int, float, bool)) for c in v):
        raise _Invalid("must be a non-empty list of strings, numbers or booleans")
    if len({(type(c), c) for c in v}) != len(v):  # (type, value): true and 1 are different choices
        raise _Invalid("choices must be distinct")
    return tuple(v)


def _array_of_tables(rep: _Report, raw: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    value = raw.get(name, [])
    if not isinstance(value, list):
        rep.add(name, f"must be an array of tables ([[{name}]])", value)
        return []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            rep.add(f"[{name}][{i}]", f"must be a table ([[{name}]])", entry)
    return [e if isinstance(e, dict) else {} for e in value]


def _callable_ref(base: Path, functions: bool = False) -> Rule:
    """A callable reference, resolved; ``functions``: a Python function (from a dict) is taken as is."""

    def rule(v: Any) -> str | Callable[..., Any]:
        if functions and callable(v) and not isinstance(v, (str, type)):
            return v
        if not isinstance(v, str):
            raise _Invalid("must be a string: 'module:function' or 'file.py:function'"
                           + (" (or, from Python, a function)" if functions else ""))
        try:
            split_ref(v)
        except CallableError as exc:
            raise _Invalid(str(exc)) from None
        try:
            load_callable(v, base)
        except CallableError as exc:
            raise _Invalid(f"cannot import: {exc}") from None
        # Stored absolute, so the resolved spec runs from any directory.
        return resolve_ref(v, base) if is_file_ref(v) else v

    return rule


def _objectives(rep: _Report, raw: Mapping[str, Any], base: Path, kind: str) -> tuple[ObjectiveInfo, ...]:
    entries = _array_of_tables(rep, raw, "objectives")
    if "objectives" not in raw:
        rep.add("[[objectives]]", "missing: declare at least one objective, e.g. name = \"error\"")
    elif not entries and isinstance(raw["objectives"], list):
        rep.add("objectives", "must declare at least one objective", raw["objectives"])
    out: list[ObjectiveInfo] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        prefix = f"[objectives][{i}]"
        v = rep.check(prefix, entry, {
            "name": _text,
            "direction": _choice("direction", DIRECTIONS),
            "callable": _callable_ref(base, functions=kind == "params"),
            "cheap": _boolean,
            "ref": _number(),
        }, required={"name": "every objective needs a name"})
        name = v.get("name")
        if name is None:
            continue
        if name in seen:
            rep.add(f"{prefix}.name", f"duplicate objective name (also [objectives][{seen[name]}])", name)
            continue
        seen[name] = i
        if "callable" in entry:
            if "callable" in v:
                direction = v.get("direction", "minimize")
                out.append(ObjectiveInfo(name, direction, v.get("cheap", False), v.get("ref"), v["callable"]))
            continue
        if kind == "params":  # measured by the function Study.optimize is given (Spec.require_callables)
            if all(k in v for k in ("direction", "cheap", "ref") if k in entry):
                out.append(ObjectiveInfo(name, v.get("direction", "minimize"), v.get("cheap", False), v.get("ref")))
            continue
        if "cheap" in entry:
            rep.add(f"{prefix}.cheap", "only allowed with a callable (a built-in objective knows its cost)",
                    entry["cheap"])
        if name not in OBJECTIVES:
            failure = OBJECTIVES.load_error(name)
            valid = [n for n in OBJECTIVES.names() if not OBJECTIVES.get(n).final_only]
            rep.add(f"{prefix}.name", failure or
                    f"unknown objective{did_you_mean(name, valid)}; built-ins: {', '.join(valid)} "
                    "(or give a callable)", name)
            continue
        builtin = OBJECTIVES.get(name)
        if builtin.final_only:
            rep.add(f"{prefix}.name", f"'{name}' is available in final reports only, not as a search "
                    "objective (searching on it would select on the test set); [search].record = "
                    f"[\"{name}\"] stores it with every trial without searching on it", name)
            continue
        if v.get("direction", builtin.direction) != builtin.direction:
            rep.add(f"{prefix}.direction", f"the built-in objective '{name}' is always {builtin.direction}d",
                    entry["direction"])
        out.append(ObjectiveInfo(name, builtin.direction, builtin.cheap, v.get("ref")))
    return tuple(out)


def _constraints(rep: _Report, raw: Mapping[str, Any], base: Path) -> tuple[ConstraintInfo, ...]:
    # Names of every declared objective, valid or not, so one mistake is not reported twice.
    entries = raw.get("objectives")
    declared = [
        o["name"] for o in (entries if isinstance(entries, list) else [])
        if isinstance(o, dict) and isinstance(o.get("name"), str)
    ]
    tables = _array_of_tables(rep, raw, "constraints")
    measured: dict[str, str] = {}  # quantities that constraint callables measure, and their callable
    for i, entry in enumerate(tables):
        name, ref = entry.get("objective"), entry.get("callable")
        if isinstance(name, str) and isinstance(ref, str) and name not in declared:
            if measured.setdefault(name, ref) != ref:
                rep.add(f"[constraints][{i}].callable", f"'{name}' is already measured by {measured[name]!r}; "
                        "one quantity has one callable", ref)
    known = list(dict.fromkeys([*declared, *measured, *OBJECTIVES.names()]))
    out: list[ConstraintInfo] = []
    for i, entry in enumerate(tables):
        prefix = f"[constraints][{i}]"
        v = rep.check(prefix, entry, {"objective": _text, "min": _number(), "max": _number(),
                                      "callable": _callable_ref(base), "cheap": _boolean},
                      required={"objective": "every constraint names an objective"})
        ok = "objective" in v and ("callable" not in entry or "callable" in v)
        if "cheap" in entry and "callable" not in entry:
            rep.add(f"{prefix}.cheap", "only allowed with a callable (a built-in or declared objective knows its "
                    "cost)", entry["cheap"])
            ok = False
        if "callable" in entry:
            if ok and v["objective"] in declared:
                rep.add(f"{prefix}.callable", f"'{v['objective']}' is a declared objective, measured by its own "
                        "[[objectives]] entry; a constraint callable measures a quantity of its own", entry["callable"])
                ok = False
        elif ok and v["objective"] not in known and v["objective"] not in OBJECTIVES:
            rep.add(f"{prefix}.objective",
                    f"unknown objective{did_you_mean(v['objective'], known)}; declared or built-in: "
                    f"{', '.join(known)}", v["objective"])
            ok = False
        elif ok and v["objective"] in measured:  # measured by another constraint's callable (resolved below)
            pass
        elif ok and v["objective"] not in declared and OBJECTIVES.get(v["objective"]).final_only:
            rep.add(f"{prefix}.objective", f"'{v['objective']}' is available in final reports only, not as a "
                    "search constraint", v["objective"])
            ok = False
        if "min" not in entry and "max" not in entry:
            rep.add(prefix, "needs min, max or both")
            ok = False
        lo, hi = v.get("min"), v.get("max")
        if lo is not None and hi is not None and lo > hi:
            rep.add(prefix, f"min <= max must hold, but got (min={lo!r}, max={hi!r})")
            ok = False
        if ok and all(k in v for k in ("min", "max") if k in entry):
            out.append(ConstraintInfo(v["objective"], lo, hi, v.get("callable"), v.get("cheap", False)))
    # a bound on a quantity another constraint's callable measures: the same callable and cost
    measuring = {c.objective: c for c in out if c.callable}
    return tuple(c if c.callable or c.objective not in measuring else
                 dataclasses.replace(c, callable=measuring[c.objective].callable, cheap=measuring[c.objective].cheap)
                 for c in out)


# ---------------------------------------------------------------------------------------------------
# Writing TOML
# ---------------------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
# Tables nested this deep ([space.params] entries, {low, high, log} ranges, merge weights) are written
# inline; arrays of tables ([[objectives]]) are sections only at the top.
_INLINE_DEPTH = 3


def dump_toml(spec: Spec) -> str:
    """The resolved spec (``spec.to_dict()``) as TOML text that load_spec reads back to an equal Spec."""
    lines: list[str] = []
    _write_table(lines, (), spec.to_dict())
    return "\n".join(lines).lstrip("\n") + "\n"


def _write_table(lines: list[str], path: tuple[str, ...], table: Mapping[str, Any]) -> None:
    def is_section(key: str, value: Any) -> bool:
        is_range = isinstance(value, dict) and set(value) == {"low", "high", "log"}  # _plain(Range)
        return (isinstance(value, dict) and not is_range and len(path) + 1 < _INLINE_DEPTH) or (
            not path and isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
        )

    if path:
        lines += ["", f"[{'.'.join(_toml_key(p) for p in path)}]"]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items() if not is_section(k, v)]
    for key, value in table.items():
        if not is_section(key, value):
            continue
        if isinstance(value, dict):
            _write_table(lines, (*path, key), value)
            continue
        header = ".".join(_toml_key(p) for p in (*path, key))
        for item in value:
            lines += ["", f"[[{header}]]"]
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items()]


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:  # TOML forbids raw control characters
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # repr round-trips exactly and is valid TOML ("0.1", "1e-05")
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, Path):
        return _toml_string(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if hasattr(value, "isoformat"):  # TOML dates and times, only ever shown in error lines
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
