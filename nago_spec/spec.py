"""The spec file: TOML -> validated, frozen dataclasses, with every problem of a file reported at once.

This module holds the spec objects and the ways to get one (load_spec, Spec.from_dict); the checks
are nago_spec.spec_rules (values) and nago_spec.spec_sections (tables), the writer nago_spec.spec_toml."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from nago_spec.errors import SpecError
from nago_spec.fidelity import Fidelity
from nago_spec.graphs import GRAPH_MODELS
from nago_spec.problem import ConstraintInfo, ObjectiveInfo

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
    feasible trials by ``order_by``); ``max_models`` caps the points. ``trials``: these trials' points
    instead, all of them in the order given (say, two front networks to train again for longer).
    ``batch_size``, ``lr``, ``warmup_epochs`` and the augmentation (``crop_padding``, ``flip``,
    ``cutout``; the paper's final protocol uses cutout 16 on 32x32 images) default to [train]'s;
    Spec.final_train() resolves them.
    ``latency``: time each model in onnxruntime and torch. ``max_seconds`` caps each model's final
    training; the schedule then follows the time spent, as [train].max_seconds does in the search.
    ``full_data``: train the final models on the whole training split, not [data].limit's subsample
    (the validation split is then carved from the whole split, with the same fraction and seed).
    ``quantize``: twins written beside each float32 model ("int8": static QDQ calibrated on
    ``calibration_images`` stratified training images; "fp16"), each measured against its parent.
    ``param_budget``: build the final models with this budget in place of the point's (searched or
    fixed): the same graphs from the same seeds, every width scaled to it (NAGO.md §1.6), so a search
    of small, quickly trained networks deploys wider ones. None: the searched networks as they are.
    """

    onnx: bool = True
    final_epochs: float = 5.0
    samples: int = 3
    select: str = "pareto"
    order_by: str | None = None  # an objective's name; None: the first objective
    max_models: int | None = None
    trials: tuple[int, ...] = ()
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
    quantize: tuple[str, ...] = ()
    calibration_images: int = 512
    param_budget: int | None = None


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
            "export": _export_dict(self.export),
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
            export = self.to_dict()["export"]
            for name, default in (("quantize", []), ("calibration_images", 512)):  # added since: at the
                if export.get(name) in (default, tuple(default) if isinstance(default, list) else default):
                    export.pop(name, None)  # default, the key of a run exported before stays the same
            blob = resume + json.dumps(export, sort_keys=True)
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


def _export_dict(e: ExportSpec) -> dict[str, Any]:
    d = _fields_dict(e)
    if not e.trials:  # left out, so the export key of a run exported before stays the same
        d.pop("trials")
    return d


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
    from nago_spec.spec_rules import _Report  # the validation imports this module's objects
    from nago_spec.spec_sections import _build_spec

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


# re-exported: the one writer of spec files (spec.toml), beside the reader
from nago_spec.spec_toml import dump_toml  # noqa: E402
