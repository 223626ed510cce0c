"""The spec compiled into a search problem: its space, cheap metrics and the evaluation of one point."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nago_spec.callables import callable_label, load_callable
from nago_spec.errors import TrialError
from nago_spec.objectives import OBJECTIVES, EvalContext
from nago_spec.objectives import adapt_callable as _adapt
from nago_spec.problem import ObjectiveInfo, Problem
from nago_spec.seeds import sample_seed
from nago_spec.space import CategoricalParam, FloatParam, IntParam, SearchSpace
from nago_spec.spec import Range, Spec, TrainSpec

LEVELS = ("top", "mid", "bottom")


@dataclass(frozen=True)
class DataShape:
    """What the generator needs to know of the data: input channels, image size, classes."""

    in_channels: int
    image_size: tuple[int, int]
    num_classes: int

    @classmethod
    def of(cls, data: Any) -> DataShape:
        return cls(data.in_channels, tuple(data.image_size), data.num_classes)


def build_space(spec: Spec) -> SearchSpace:
    """The searched parameters of a spec, one per Range (or conv-type list) in it, named by where it sits.

    Network specs: ``top.nodes``, ``mid.p``, ... for the level tables (``stage.*`` for rnag),
    ``top.merge.concat`` for a level's merge weights, ``stage_ratios.0``, ``channel_ratios.2``,
    ``param_budget``, ``head_width``, ``conv_type`` (categorical) and ``ops.conv5x5``. Plain-parameter specs: the
    names of [space.params].
    """
    params: list[Any] = []
    if spec.space.kind == "params":
        for name, p in spec.space.params.items():
            if p.type == "categorical":
                params.append(CategoricalParam(name, tuple(p.choices)))
            elif p.type == "int":
                params.append(IntParam(name, int(p.low), int(p.high), log=p.log))
            else:
                params.append(FloatParam(name, float(p.low), float(p.high), log=p.log))
        return SearchSpace(tuple(params))
    from nago_spec.graphs import GRAPH_MODELS

    def add(name: str, value: Any, cls: type = FloatParam) -> None:
        if isinstance(value, Range):
            params.append(cls(name, value.low, value.high, log=value.log))

    s = spec.space
    for level in s.levels:
        lspec = s.level(level)
        kinds = {gp.name: gp.kind for gp in GRAPH_MODELS.get(lspec.graph).params}
        for key, value in lspec.params.items():
            add(param_name(level, key), value, IntParam if kinds[key] is int else FloatParam)
        for key, value in lspec.merge.items():
            add(param_name(level, "merge", key), value)
    if s.kind == "hnag":
        for i, r in enumerate(s.stage_ratios):
            add(param_name("stage_ratios", i), r)
    for i, r in enumerate(s.channel_ratios):
        add(param_name("channel_ratios", i), r)
    add("param_budget", s.param_budget, IntParam)
    add("head_width", s.head_width, IntParam)
    if s.kind == "hnag":
        if isinstance(s.conv_type, tuple):
            params.append(CategoricalParam("conv_type", s.conv_type))
        for key, value in s.ops.items():
            add(param_name("ops", key), value)
    return SearchSpace(tuple(params))


def param_name(*parts: str | int) -> str:
    """The searched parameter's name for a place in the network space ("top.p", "mid.merge.sum",
    "stage_ratios.0", "ops.conv3x3"): the one naming rule of build_space and the configs built from
    a point, so the two cannot drift apart."""
    return ".".join(map(str, parts))


def _resolve(value: Any, name: str, params: Mapping[str, Any]) -> Any:
    """A spec value at one point: the point's value where it is searched, else the fixed value."""
    return params[name] if isinstance(value, (Range, tuple)) else value


def _level_config(spec: Spec, level: str, params: Mapping[str, Any]):
    from nago_spec.generator import LevelConfig

    lspec = spec.space.level(level)
    values = {key: _resolve(v, param_name(level, key), params) for key, v in lspec.params.items()}
    merge = {key: _resolve(v, param_name(level, "merge", key), params) for key, v in lspec.merge.items()}
    return LevelConfig(lspec.graph, values, merge)


def _widths(spec: Spec, params: Mapping[str, Any]) -> dict[str, Any]:
    s = spec.space
    return {
        "param_budget": int(_resolve(s.param_budget, "param_budget", params)),
        "channel_ratios": tuple(_resolve(r, param_name("channel_ratios", i), params)
                                for i, r in enumerate(s.channel_ratios)),
        "head_width": int(_resolve(s.head_width, "head_width", params)),
    }


def hnag_config(spec: Spec, params: Mapping[str, Any]):
    """The generator configuration of one point: fixed values from the spec, searched ones from ``params``.

    Searched stage ratios are relative weights, normalised here to sum to 1.
    """
    from nago_spec.generator import HnagConfig

    levels = {level: _level_config(spec, level, params) for level in LEVELS}
    s = spec.space
    stage_ratios = tuple(_resolve(r, param_name("stage_ratios", i), params) for i, r in enumerate(s.stage_ratios))
    if any(isinstance(r, Range) for r in s.stage_ratios):
        total = sum(stage_ratios)
        stage_ratios = tuple(r / total for r in stage_ratios)
    return HnagConfig(
        **levels,
        **_widths(spec, params),
        stage_ratios=stage_ratios,
        share_graphs=s.share_graphs,
        ops={key: _resolve(v, param_name("ops", key), params) for key, v in s.ops.items()},
        conv_type=_resolve(s.conv_type, "conv_type", params),
    )


def rnag_config(spec: Spec, params: Mapping[str, Any]):
    """The RandWire generator configuration of one point of an rnag spec."""
    from nago_spec.generator import RnagConfig

    return RnagConfig(stage=_level_config(spec, "stage", params), **_widths(spec, params))


def generator_config(spec: Spec, params: Mapping[str, Any]):
    """The generator configuration of one point, for either network kind (hnag or rnag)."""
    return rnag_config(spec, params) if spec.space.kind == "rnag" else hnag_config(spec, params)


def sample_architecture(spec: Spec, params: Mapping[str, Any], seed: int, shape: DataShape,
                        param_budget: int | None = None):
    """The architecture a point generates with ``seed``; ``param_budget``: the same graphs at this
    budget's widths instead of the point's ([export].param_budget)."""
    from nago_spec.generator import sample_architecture as sample

    config = generator_config(spec, params)
    if param_budget is not None:
        config = dataclasses.replace(config, param_budget=param_budget)
    return sample(
        config,
        seed,
        in_channels=shape.in_channels,
        image_size=shape.image_size,
        num_classes=shape.num_classes,
    )


def fit(model: Any, data: Any, t: TrainSpec, seed: int, device: str = "cpu") -> Any:
    """Train ``model`` in place on ``device`` as ``t`` says (nago_spec.train.train) and return its
    TrainResult; the model stays on ``device``.

    Cutout fills with the training split's mean pixel, which the model's normalisation maps to 0.
    """
    from nago_spec.train import Augment, train

    augment = Augment(t.crop_padding, t.flip, t.cutout, fill=tuple(255.0 * m for m in data.mean))
    return train(
        model,
        data,
        epochs=t.epochs,
        batch_size=t.batch_size,
        lr=t.lr,
        seed=seed,
        optimizer=t.optimizer,
        momentum=t.momentum,
        nesterov=t.nesterov,
        weight_decay=t.weight_decay,
        warmup_epochs=t.warmup_epochs,
        label_smoothing=t.label_smoothing,
        augment=augment if augment else None,
        channels_last=t.channels_last,
        max_seconds=t.max_seconds,
        device=device,
        precision=t.precision,
        deterministic=t.deterministic,
    )


class Evaluator:
    """Evaluates points of a spec: samples, trains and scores architectures (or calls a black box).

    Holds the imported custom callables, so construct it once per process.
    """

    def __init__(self, spec: Spec, run_dir: Path | None = None):
        self.spec = spec
        self.run_dir = run_dir
        base = spec.path.parent
        # the callable measuring each custom quantity (objectives, and constraints with a callable of their
        # own); quantities naming the same callable share one call per evaluation
        self._callable_of = {o.name: o.callable for o in spec.objectives if o.callable}
        self._callable_of.update({c.objective: c.callable for c in spec.constraints if c.callable})
        self._callables: dict[str, Callable[..., Any]] = {
            ref: _adapt(ref if not isinstance(ref, str) else load_callable(ref, base))
            for ref in dict.fromkeys(self._callable_of.values())
        }
        self.objectives = spec.objectives  # with a built-in's own cost, resolved by the spec
        # quantities only a constraint names: measured with every trial, optimised by none
        declared = {o.name for o in self.objectives}
        extra = {c.objective: c for c in spec.constraints if c.objective not in declared}
        self._constrained = tuple(
            ObjectiveInfo(n, "minimize", c.cheap) if c.callable
            else ObjectiveInfo(n, OBJECTIVES.get(n).direction, OBJECTIVES.get(n).cheap)
            for n, c in extra.items()
        )
        self._measured = [o.name for o in self.objectives + self._constrained]
        # [search].record: stored with every trial, never shown to the strategy
        self._measured += [n for n in spec.search.record if n not in declared and n not in extra]

    # -- problem -----------------------------------------------------------------------------------
    def problem(self, shape: DataShape | None) -> Problem:
        """The optimiser's view: space, objectives, constraints and exact cheap metrics."""
        cheap_names = [o.name for o in self.objectives + self._constrained if o.cheap]
        cheap_fn = None
        if cheap_names:

            def cheap_fn(params: Mapping[str, Any], trial_id: int) -> dict[str, float]:
                return self.cheap_values(params, trial_id, shape, cheap_names)

        return Problem(
            space=build_space(self.spec),
            objectives=self.objectives,
            constraints=self.spec.constraints,
            cheap_fn=cheap_fn,
        )

    def cheap_values(
        self, params: Mapping[str, Any], trial_id: int, shape: DataShape | None, names: list[str]
    ) -> dict[str, float]:
        """Exact values of the cheap objectives for the first architecture trial ``trial_id`` would build."""
        seed = sample_seed(self.spec.seed, trial_id, 0)
        arch = sample_architecture(self.spec, params, seed, shape) if self._is_network else None
        ctx = EvalContext(params=dict(params), seed=seed, architecture=arch, run_dir=self.run_dir)
        return self._score(ctx, names)

    @property
    def _is_network(self) -> bool:
        return self.spec.space.kind != "params"

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(
        self, params: Mapping[str, Any], trial_id: int, data: Any, *, budget: float | None = None,
        config: int | None = None, device: str = "cpu",
    ) -> tuple[dict[str, float], list[dict]]:
        """Values of every objective (mean over the sampled architectures) and one record per sample,
        the networks trained on ``device`` (``data`` is moved there once, if it is not there yet).

        Multi-fidelity runs pass ``budget`` (epochs, or the fraction of the training split, as
        ``[search.fidelity].on`` says) and ``config``, the trial that first proposed ``params``:
        the architectures are sampled with ``config``'s seeds, so a promotion trains the very
        networks its lower rung did, for longer or on more data.

        Raises TrialError for anything that makes the point unusable (NaN loss, a bad objective value),
        and when none of its networks learned (``_did_not_learn``): a network that answers no better
        than chance is no point of an accuracy/size front, however small, and the optimiser should
        learn where such networks are (bo's success model) rather than take them for cheap ones.
        """
        fidelity = self.spec.search.fidelity
        if budget is not None and fidelity is None:
            raise ValueError("evaluate: a budget needs [search.fidelity]")
        if config is not None:
            trial_id = config
        names = self._measured
        if not self._is_network:
            ctx = EvalContext(params=dict(params), seed=sample_seed(self.spec.seed, trial_id, 0), run_dir=self.run_dir)
            values = self._score(ctx, names)
            return values, [{"sample": 0, "seed": ctx.seed, "values": values}]

        from torch import nn

        from nago_spec.network import Normalize, build_network

        shape = DataShape.of(data)
        t = self.spec.train
        if budget is not None and fidelity.on == "epochs":
            t = dataclasses.replace(t, epochs=budget)
        elif budget is not None:
            from nago_spec.data import train_fraction

            data = train_fraction(data, budget, self.spec.seed)
        from nago_spec.train import on_device

        data = on_device(data, device)  # the worker's cached copy is there already: no copy
        samples, unlearned = [], []  # per sample: why its network did not learn, or None
        for s in range(t.samples_per_point):
            seed = sample_seed(self.spec.seed, trial_id, s)
            start = time.perf_counter()
            arch = sample_architecture(self.spec, params, seed, shape)
            model = nn.Sequential(Normalize(data.mean, data.std), build_network(arch, seed))
            result = fit(model, data, t, seed, device)
            ctx = EvalContext(
                params=dict(params), seed=seed, architecture=arch, model=model, data=data,
                train_result=result, run_dir=self.run_dir, device=device,
            )
            values = self._score(ctx, names)
            samples.append(
                {
                    "sample": s,
                    "seed": seed,
                    "values": values,
                    "train": {
                        "val_accuracy": result.val_accuracy,
                        "epochs": result.epochs,
                        "images": len(data.y_train),
                        "seconds": result.seconds,
                        "images_per_second": result.images_per_second,
                        "device": result.device,
                        "precision": result.precision,
                    },
                    "seconds": time.perf_counter() - start,
                }
            )
            if result.restarted_at is not None:  # died, and trained again warmed up (train)
                samples[-1]["train"]["restarted_at"] = result.restarted_at
            unlearned.append(_did_not_learn(result, data))
            if ctx.extra:  # side results of objectives (the latency spread, ...)
                samples[-1]["extra"] = dict(ctx.extra)
        if all(unlearned):
            first = unlearned[0]
            raise TrialError(first if len(unlearned) == 1 else f"none of its {len(unlearned)} networks learned; the first: {first}")
        mean = {n: sum(smp["values"][n] for smp in samples) / len(samples) for n in names}
        return mean, samples

    def _score(self, ctx: EvalContext, names: list[str]) -> dict[str, float]:
        """Compute the named objectives; custom callables are called once per distinct callable."""
        out: dict[str, float] = {}
        results: dict[str, Any] = {}
        for name in names:
            ref = self._callable_of.get(name)
            if ref is not None:
                if ref not in results:
                    fn = self._callables[ref]
                    try:
                        results[ref] = fn(ctx)
                    except Exception as exc:  # a user's objective failing is the trial's failure, not the run's
                        raise TrialError(f"objective {name!r} ({callable_label(ref)}) raised {type(exc).__name__}: {exc}") from exc
                raw = results[ref]
                if isinstance(raw, Mapping):
                    if name not in raw:
                        raise TrialError(
                            f"objective {name!r} ({callable_label(ref)}) returned a mapping without key {name!r}"
                            f" (keys: {', '.join(map(str, raw))})"
                        )
                    raw = raw[name]
                value = _as_float(raw, name)
            else:
                try:
                    raw = OBJECTIVES.get(name).compute(ctx)
                except Exception as exc:  # an export or a plug-in failing is the trial's failure, not the run's
                    raise TrialError(f"objective {name!r} raised {type(exc).__name__}: {exc}") from exc
                value = _as_float(raw, name)
            out[name] = value
        return out


def _did_not_learn(result: Any, data: Any) -> str | None:
    """Why the network of a training ``result`` (nago_spec.train.TrainResult) did not learn, or None when it
    did: its validation accuracy is at chance (nago_spec.train.at_chance) after a training long enough to
    be judged dead (DEAD_WINDOW steps, or a restart). A shorter one is left alone: a smoke run's few steps
    may not beat chance yet. ``result.dead`` (the loss still at a constant output's level at the end)
    only words the reason: a network that died after its last check, or whose training loss fell while
    it answers at chance, is no point of a front either."""
    from nago_spec.train import DEAD_WINDOW, at_chance

    chance, majority = at_chance(result.val_accuracy, data.y_val)
    if not chance or (result.restarted_at is None and result.steps < DEAD_WINDOW):
        return None
    died = ""
    if result.dead:
        again = f" by step {result.restarted_at} and again after a warmed-up restart" if result.restarted_at is not None else ""
        died = (f"; its training died{again} (the mean loss of its last {DEAD_WINDOW} steps no lower than a "
                f"network's that ignores its input)")
    return (f"the network did not learn: after {result.steps} training steps it answers {result.val_accuracy:.1%} "
            f"of the validation images right, within two standard errors of always answering the most frequent "
            f"class ({majority:.1%}){died}. A training ends at chance when it dies at too high a learning rate "
            f"(narrow networks first) or is too short: lower [train].lr, add [train].warmup_epochs or train longer")


def _as_float(raw: Any, name: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) and not hasattr(raw, "__float__"):
        raise TrialError(f"objective {name!r} returned {type(raw).__name__} {raw!r}, not a number")
    value = float(raw)
    if not math.isfinite(value):
        raise TrialError(f"objective {name!r} returned {value}, not a finite number")
    return value


def sample_noise(samples: list[dict[str, Any]]) -> dict[str, float] | None:
    """The variance of each objective's mean over a point's sampled architectures: the samples'
    variance (ddof 1) divided by their count; None with fewer than two samples.

    The spread of architectures drawn from one generator is the noise of that generator's value,
    which the bo strategy models as heteroscedastic (the NAGO paper's motivation for its BNN).
    """
    rows = [s["values"] for s in samples if s.get("values")]
    if len(rows) < 2:
        return None
    names = set.intersection(*(set(r) for r in rows))
    out = {}
    for name in sorted(names):
        v = [float(r[name]) for r in rows]
        mean = sum(v) / len(v)
        out[name] = sum((x - mean) ** 2 for x in v) / (len(v) - 1) / len(v)
    return out
