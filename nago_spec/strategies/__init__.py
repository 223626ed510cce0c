"""Search strategies by name: the registry a spec's [search] strategy looks up."""

from __future__ import annotations

from nago_spec.registry import Registry
from nago_spec.strategies.base import Strategy, Trial
from nago_spec.strategies.bo import BOStrategy
from nago_spec.strategies.evolution import EvolutionStrategy
from nago_spec.strategies.random import RandomStrategy

STRATEGIES: Registry[type[Strategy]] = Registry("strategy")
STRATEGIES.register("random", RandomStrategy)
STRATEGIES.register("bo", BOStrategy)
STRATEGIES.register("evolution", EvolutionStrategy)

__all__ = ["STRATEGIES", "BOStrategy", "EvolutionStrategy", "RandomStrategy", "Strategy", "Trial"]
