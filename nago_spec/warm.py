"""Warm start: the completed trials of earlier runs, told to a new run's strategy before it first asks.

``[search] warm_start = ["runs/old"]`` in a spec, or ``Study.add_trials(other)``. An earlier run is
usable when its space is this one's, key for key (the searched parameters, their ranges and every
fixed part of the generator, which gives a point its meaning), and its trials measured every
objective and constrained quantity of this spec in the same direction. Anything else is refused
with one line naming what differs. The values are taken as measured: a run that trained for other
epochs or on other data is the user's call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nago_spec.errors import NagoError, SpecError
from nago_spec.spec import Spec, changed_keys, load_spec
from nago_spec.store import Store, TrialState


@dataclass(frozen=True)
class WarmTrial:
    """A completed trial of an earlier run: where it comes from, its point, values and their noise."""

    source: Path
    trial: int
    params: dict[str, Any]
    values: dict[str, float]
    samples: list[dict[str, Any]]


def warm_trials(spec: Spec) -> list[WarmTrial]:
    """The completed trials of every run in ``spec.search.warm_start``, in order; SpecError (one line,
    naming ``[search].warm_start`` and the run) when one is not compatible with ``spec``."""
    out: list[WarmTrial] = []
    for source in spec.search.warm_start:
        out += _trials_of(spec, source)
    return out


def _trials_of(spec: Spec, source: Path) -> list[WarmTrial]:
    def refuse(why: str) -> SpecError:
        return SpecError(f"{spec.path}: [search].warm_start = {json.dumps(str(source))}: {why}")

    if not (source / "study.db").is_file() or not (source / "spec.toml").is_file():
        raise refuse("not a run directory (no study.db and spec.toml)")
    try:
        other = load_spec(source / "spec.toml")
    except SpecError as exc:
        raise refuse(f"its spec.toml does not load: {exc.lines[0]}") from None
    ours, theirs = spec.to_dict()["space"], other.to_dict()["space"]
    diff = changed_keys(ours, theirs)
    if diff:
        key = diff[0]
        name = key.removeprefix("params.") if spec.space.kind == "params" else key
        here, there = _at(ours, key), _at(theirs, key)
        if here is None:
            raise refuse(f"its space has {name}, this one does not")
        if there is None:
            raise refuse(f"its space lacks {name}")
        raise refuse(f"its space differs at {name}: {there} there, {here} here")
    directions = {o.name: o.direction for o in other.objectives}
    for o in spec.objectives:
        if o.name in directions and directions[o.name] != o.direction:
            raise refuse(f"objective {o.name!r} is {directions[o.name]}d there, {o.direction}d here")
    needed = [o.name for o in spec.objectives] + [c.objective for c in spec.constraints]
    try:
        with Store(source / "study.db", readonly=True) as store:
            complete = [t for t in store.trials() if t.state is TrialState.COMPLETE and t.values is not None]
    except NagoError as exc:
        raise refuse(f"its study.db cannot be read: {exc}") from None
    for t in complete:
        missing = [n for n in needed if n not in t.values]
        if missing:
            raise refuse(f"its trials did not measure {missing[0]!r} (trial {t.id} has "
                         f"{', '.join(sorted(t.values))})")
    if other.search.fidelity is not None:  # the top budget alone measures what a full evaluation does
        top = max((t.budget for t in complete if t.budget is not None), default=None)
        complete = [t for t in complete if t.budget == top]
    return [WarmTrial(source, t.id, t.params, t.values, t.samples) for t in complete]


def _at(d: Any, key: str) -> str | None:
    """The value at dotted ``key`` as JSON; None where it is absent."""
    for part in key.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return json.dumps(d)
