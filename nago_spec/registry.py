"""Name -> object registries, for the things a TOML file names (graph models, datasets, strategies,
backends, objectives). A registry is the one list of its names: spec validation asks it, so what a
plug-in registers works in a spec like a built-in.

Plug-ins register in two ways:
- from Python, ``DATASETS.register("mine", loader)`` before the spec is loaded (that process, and
  the in-process backend, see it);
- as an entry point of the registry's group (``nago_spec.datasets``, ``nago_spec.strategies``,
  ``nago_spec.graph_models``, ``nago_spec.backends``, ``nago_spec.objectives``) in an installed
  distribution: every process, workers included, loads it the first time a name is missing.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from nago_spec.errors import RegistryError

T = TypeVar("T")

log = logging.getLogger(__name__)


def did_you_mean(name: str, valid: list[str] | tuple[str, ...]) -> str:
    """A ' (did you mean 'x'?)' suffix naming the closest valid name, or '' when none is close."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(Generic[T]):
    """A named collection where duplicates fail and a failed look-up lists the valid names.

    ``group``: the entry-point group whose plug-ins are loaded, once each, the first time a name is
    missing; ``convert`` turns what an entry point loads into an item
    (raising to refuse it). Items may be registered lazily by reference (``register_lazy``), so
    that a name is known without importing its module.
    """

    def __init__(self, kind: str, group: str | None = None, convert: Callable[[str, Any], T] | None = None):
        self.kind = kind
        self.group = group
        self.convert = convert
        self._items: dict[str, T] = {}
        self._lazy: dict[str, str] = {}
        self._seen: set[tuple[str, str]] = set()
        self._failed: dict[str, str] = {}

    def register(self, name: str, item: T | None = None) -> Callable[[T], T] | T:
        """Register ``item`` under ``name``; without ``item`` returns a decorator."""

        def add(obj: T) -> T:
            if name in self._items or name in self._lazy:
                raise RegistryError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return add if item is None else add(item)

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``"module:attribute"`` under ``name``, imported at its first ``get``."""
        if name in self._items or name in self._lazy:
            raise RegistryError(f"{self.kind} '{name}' is already registered")
        self._lazy[name] = target

    def load_plugins(self) -> None:
        """Register every not yet loaded entry point of the group (cheap when nothing is new). One that
        fails to load is remembered, and named when its name is looked up."""
        if self.group is None:
            return
        for ep in entry_points(group=self.group):
            key = (ep.name, ep.value)
            if key in self._seen:
                continue
            self._seen.add(key)
            dist = getattr(ep.dist, "name", None) or "?"
            where = f"{self.kind} plug-in '{ep.name}' ({ep.value}, distribution {dist})"
            if ep.name in self._items or ep.name in self._lazy:
                log.warning("%s ignored: a %s '%s' is already registered", where, self.kind, ep.name)
                continue
            try:
                obj = ep.load()
                self.register(ep.name, self.convert(ep.name, obj) if self.convert else obj)
            except Exception as exc:  # noqa: BLE001 - an installed package's bug must not break other look-ups
                self._failed[ep.name] = f"{where} failed to load: {type(exc).__name__}: {exc}"

    def load_error(self, name: str) -> str | None:
        """Why the plug-in providing ``name`` failed to load, or None."""
        if name not in self:
            return self._failed.get(name)
        return None

    def get(self, name: str) -> T:
        if name not in self._items and name in self._lazy:  # imported once, the reference kept
            module, _, attr = self._lazy[name].partition(":")
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self._items[name] = obj
        if name not in self._items:
            self.load_plugins()
            if name in self._failed:
                raise RegistryError(self._failed[name])
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())}; "
                f"valid: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """The registered names, plug-ins included once a look-up has loaded them."""
        return sorted({*self._items, *self._lazy})

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and name not in self._items and name not in self._lazy:
            self.load_plugins()
        return name in self._items or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


#: ``[data].dataset`` -> loader ``(path) -> (x_train, y_train, x_test, y_test, classes)`` (nago_spec.data).
DATASETS: Registry[Callable[..., Any]] = Registry("dataset", "nago_spec.datasets")
#: ``[search].strategy`` -> a nago_spec.strategies.Strategy subclass.
STRATEGIES: Registry[type] = Registry("strategy", "nago_spec.strategies")
#: ``[run].backend`` -> a backend class taking the worker count (nago_spec.runners.backends).
BACKENDS: Registry[Callable[..., Any]] = Registry("backend", "nago_spec.backends")

for _name, _target in (
    ("digits", "nago_spec.data:_load_digits"),
    ("idx", "nago_spec.data:_load_idx"),
    ("npz", "nago_spec.data:_load_npz"),
    ("image-folder", "nago_spec.data:_load_image_folder"),
):
    DATASETS.register_lazy(_name, _target)
for _name, _target in (
    ("bo", "nago_spec.strategies.bo:BOStrategy"),
    ("evolution", "nago_spec.strategies.evolution:EvolutionStrategy"),
    ("random", "nago_spec.strategies.random:RandomStrategy"),
):
    STRATEGIES.register_lazy(_name, _target)
for _name, _target in (
    ("local", "nago_spec.runners.backends:LocalBackend"),
    ("process", "nago_spec.runners.backends:ProcessBackend"),
    ("ray", "nago_spec.runners.backends:RayBackend"),
):
    BACKENDS.register_lazy(_name, _target)
