"""The optimiser's view of a search: space, objectives with directions, constraints and exact cheap metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nago_spec.space import SearchSpace

DIRECTIONS = ("minimize", "maximize")


@dataclass(frozen=True)
class ObjectiveInfo:
    """One objective, as the spec declares it and the optimiser sees it: its name, direction, whether
    the optimiser may compute it exactly (``cheap``), the hypervolume reference value the user gave
    (``ref``, in the objective's own units; None: inferred), and what measures it (``callable``: a
    "module:function" or absolute "file.py:function" reference; in a plain-parameter space also a
    Python function, or None until Study.optimize is given one; None for a built-in).
    """

    name: str
    direction: str
    cheap: bool = False
    ref: float | None = None
    callable: str | Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"objective {self.name!r}: direction must be one of {DIRECTIONS}, got {self.direction!r}")


@dataclass(frozen=True)
class ConstraintInfo:
    """``min <= value(objective) <= max``, either bound optional, in the objective's own units.

    ``objective`` names a declared or built-in objective, or, with ``callable``, a quantity that
    callable measures for the constraint alone (``cheap`` as for objectives).
    """

    objective: str
    min: float | None = None
    max: float | None = None
    callable: str | None = None
    cheap: bool = False

    def violation(self, value: float) -> float:
        """0 when ``value`` satisfies the constraint, else its distance to the violated bound."""
        v = float(value)
        if self.min is not None and v < self.min:
            return float(self.min - v)
        if self.max is not None and v > self.max:
            return float(v - self.max)
        return 0.0


CheapFn = Callable[[Mapping[str, Any], int], Mapping[str, float]]


@dataclass(frozen=True)
class Problem:
    """What a strategy optimises.

    ``cheap_fn(params, trial_id)`` returns the exact values of every cheap objective (and of any cheap
    quantity a constraint names) for the architecture trial ``trial_id`` would build from ``params``.
    """

    space: SearchSpace
    objectives: tuple[ObjectiveInfo, ...]
    constraints: tuple[ConstraintInfo, ...] = ()
    cheap_fn: CheapFn | None = None

    def __post_init__(self) -> None:
        if not self.objectives:
            raise ValueError("a problem needs at least one objective")
        if any(o.cheap for o in self.objectives) and self.cheap_fn is None:
            raise ValueError("cheap objectives need a cheap_fn to compute them")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.objectives)

    def violation(self, values: Mapping[str, float]) -> float:
        """Total constraint violation of one trial's values (constraints on absent names count 0)."""
        return float(sum(c.violation(values[c.objective]) for c in self.constraints if c.objective in values))
