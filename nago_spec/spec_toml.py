"""Writing a resolved spec back as TOML (the run directory's spec.toml), read back to an equal Spec."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nago_spec.spec import Spec

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
# Tables nested this deep ([space.params] entries, {low, high, log} ranges, merge weights) are written
# inline; arrays of tables ([[objectives]]) are sections only at the top.
_INLINE_DEPTH = 3


def dump_toml(spec: Spec) -> str:
    """The resolved spec (``spec.to_dict()``) as TOML text that load_spec reads back to an equal Spec."""
    lines: list[str] = []
    _write_table(lines, (), spec.to_dict())
    return "\n".join(lines).lstrip("\n") + "\n"


def _write_table(lines: list[str], path: tuple[str, ...], table: Mapping[str, Any]) -> None:
    def is_section(key: str, value: Any) -> bool:
        is_range = isinstance(value, dict) and set(value) == {"low", "high", "log"}  # _plain(Range)
        return (isinstance(value, dict) and not is_range and len(path) + 1 < _INLINE_DEPTH) or (
            not path and isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
        )

    if path:
        lines += ["", f"[{'.'.join(_toml_key(p) for p in path)}]"]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items() if not is_section(k, v)]
    for key, value in table.items():
        if not is_section(key, value):
            continue
        if isinstance(value, dict):
            _write_table(lines, (*path, key), value)
            continue
        header = ".".join(_toml_key(p) for p in (*path, key))
        for item in value:
            lines += ["", f"[[{header}]]"]
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items()]


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:  # TOML forbids raw control characters
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # repr round-trips exactly and is valid TOML ("0.1", "1e-05")
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, Path):
        return _toml_string(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if hasattr(value, "isoformat"):  # TOML dates and times, only ever shown in error lines
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
