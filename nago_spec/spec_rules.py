"""The value rules of spec validation (nago_spec.spec): each takes a TOML value and returns it
normalised or raises _Invalid with the reason; _Report collects every problem of a file, one line each."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nago_spec.generator import CONV_TYPES
from nago_spec.graphs import GraphParam
from nago_spec.registry import Registry, did_you_mean
from nago_spec.spec import MAX_STAGES, SUPPORTED_VERSION, Range
from nago_spec.spec_toml import _toml_value


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
