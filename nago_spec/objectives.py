"""Objectives: the built-ins (validation error, parameter count) and user callables named in a spec."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nago_spec.registry import Registry


@dataclass
class EvalContext:
    """What an objective sees of one evaluated architecture (or parameter point).

    ``model`` is the trained torch module (None for cheap objectives and plain-parameter specs),
    ``architecture`` the sampled generator output, ``data`` the in-memory data set, ``train_result``
    the training summary, ``run_dir`` the run directory when there is one.
    """

    params: Mapping[str, Any]
    seed: int
    architecture: Any = None
    model: Any = None
    data: Any = None
    train_result: Any = None
    run_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Objective:
    """A named objective with its direction, unit and cost class.

    ``cheap`` objectives are computed exactly for any candidate without training (the optimiser
    evaluates them for thousands of candidates); the others need training and are modelled.
    """

    name: str
    direction: str  # "minimize" | "maximize"
    unit: str
    cheap: bool
    compute: Callable[[EvalContext], float]
    doc: str = ""


OBJECTIVES: Registry[Objective] = Registry("objective")


def _error(ctx: EvalContext) -> float:
    return 1.0 - float(ctx.train_result.val_accuracy)


def _params(ctx: EvalContext) -> float:
    return float(ctx.architecture.param_count())


OBJECTIVES.register(
    "error",
    Objective("error", "minimize", "fraction", False, _error, "validation error (1 - accuracy)"),
)
OBJECTIVES.register(
    "params",
    Objective("params", "minimize", "count", True, _params, "trainable parameters of the network"),
)
