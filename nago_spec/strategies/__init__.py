"""Search strategies by name: the registry a spec's [search] strategy looks up (nago_spec.registry,
where the built-ins are registered by reference: naming one imports its module, not all three)."""

from __future__ import annotations

from typing import Any

from nago_spec.registry import STRATEGIES
from nago_spec.strategies.base import Strategy, Trial

_CLASSES = {"BOStrategy": "bo", "EvolutionStrategy": "evolution", "RandomStrategy": "random"}


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        return STRATEGIES.get(_CLASSES[name])
    raise AttributeError(f"module 'nago_spec.strategies' has no attribute {name!r}")


__all__ = ["STRATEGIES", "BOStrategy", "EvolutionStrategy", "RandomStrategy", "Strategy", "Trial"]
