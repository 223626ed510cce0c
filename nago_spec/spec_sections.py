"""Spec validation section by section (nago_spec.spec): each table of the file checked with the value
rules of nago_spec.spec_rules, into the frozen spec objects; every problem of a file is reported."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nago_spec.callables import CallableError, is_file_ref, load_callable, resolve_ref, split_ref
from nago_spec.device import DEVICE_KINDS, PRECISIONS
from nago_spec.fidelity import FIDELITY_ON, Fidelity
from nago_spec.generator import CONV_OP_NAMES, MERGE_NAMES, OP_NAMES
from nago_spec.graphs import GRAPH_MODELS
from nago_spec.objectives import OBJECTIVES
from nago_spec.problem import DIRECTIONS, ConstraintInfo, ObjectiveInfo
from nago_spec.registry import BACKENDS, DATASETS, STRATEGIES, did_you_mean
from nago_spec.spec import (
    DEFAULT_GRAPHS,
    HNAG_ONLY_KEYS,
    LEVELS,
    MAX_STAGES,
    OPSET_RANGE,
    OPTIMIZER_DEFAULTS,
    OPTIMIZER_NAMES,
    PARAM_TYPES,
    RNAG_LEVEL,
    SELECT_NAMES,
    SGD_ONLY_KEYS,
    SPACE_KINDS,
    SUPPORTED_VERSION,
    DataSpec,
    ExportSpec,
    FrozenMap,
    LevelSpec,
    ParamSpec,
    Range,
    RunSpec,
    SearchSpec,
    SpaceSpec,
    Spec,
    TrainSpec,
    default_level,
    level_default,
)
from nago_spec.spec_rules import (
    _ABSENT,
    _DATA_PATHS,
    Rule,
    _boolean,
    _channel_ratios,
    _choice,
    _class_names,
    _conv_type,
    _existing_path,
    _graph_value,
    _integer,
    _Invalid,
    _is_int,
    _number,
    _range,
    _registered,
    _Report,
    _run_name,
    _scalar_or_range,
    _show,
    _stage_ratios,
    _text,
    _version,
)


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
        "trials": _trial_ids,
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
        "quantize": _schemes,
        "calibration_images": _integer(ge=1),
        "param_budget": _integer(ge=1),
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
    """Run directories, resolved against ``base``. Whether each is a usable run is checked where its
    trials are read (nago_spec.warm: run, check, Study.add_trials), so that a run whose warm-start
    source is gone can still be shown by status and report."""

    def rule(v: Any) -> tuple[Path, ...]:
        if not isinstance(v, list) or not all(isinstance(x, str) and x and "\x00" not in x for x in v):
            raise _Invalid("must be a list of run directories (paths without NUL characters, each holding a "
                           "study.db and a spec.toml)")
        dirs = tuple((base / Path(x).expanduser()).resolve() for x in v)
        if len(set(dirs)) < len(dirs):
            raise _Invalid("names a run directory twice")
        return dirs

    return rule


def _trial_ids(v: Any) -> tuple[int, ...]:
    """[export].trials: a non-empty list of distinct trial numbers."""
    if not isinstance(v, list) or not v or not all(_is_int(x) and x >= 0 for x in v):
        raise _Invalid("must be a non-empty list of trial numbers (integers >= 0)")
    if len(set(v)) != len(v):
        raise _Invalid("names a trial twice")
    return tuple(v)


def _schemes(v: Any) -> tuple[str, ...]:
    """[export].quantize: a list of distinct quantisation schemes."""
    from nago_spec.quantize import SCHEMES

    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _Invalid(f"must be a list of schemes; valid: {', '.join(SCHEMES)}")
    for x in v:
        if x not in SCHEMES:
            raise _Invalid(f"unknown scheme {x!r}{did_you_mean(x, list(SCHEMES))}; valid: {', '.join(SCHEMES)}")
    if len(set(v)) != len(v):
        raise _Invalid("names a scheme twice")
    return tuple(v)


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
