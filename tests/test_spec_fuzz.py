"""Issue 20, point 3f: the spec loader never crashes. Structure-aware fuzzing: every key of every example
spec (at every depth, through tables and arrays of tables) is replaced by hostile values, deleted, or
joined by an unknown key; each mutation must load as a valid spec or fail with a SpecError whose every
line is one clean line naming the file. Nothing else may escape: no TypeError, no traceback."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nago_spec.errors import SpecError
from nago_spec.spec import load_spec
from nago_spec.spec_toml import _toml_key, _toml_value

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "specs").glob("*.toml"))

HOSTILE: list[Any] = [
    "", "x", "a\x00b", "../" * 40 + "nowhere", "é" * 300,
    0, -1, 1, 2**63 - 1, 10**30, 1e308, math.inf, -math.inf, math.nan, 0.5, -0.0,
    True, False, [], {}, [1, "a"], [[1, 2], ["a"]], [{}], {"nested": True}, {"low": 1, "high": 0},
    dt.date(2020, 1, 1), dt.datetime(2020, 1, 1, 12, 0), dt.time(1, 2, 3),
]


def toml_document(d: dict) -> str:
    """The document as top-level keys with inline tables and arrays (the spec module's own TOML writer)."""
    return "\n".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in d.items()) + "\n"


def paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every key path of ``node`` (keys of tables, indices of arrays of tables)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k)
            yield from paths(v, (*prefix, k))
    elif isinstance(node, list) and node and all(isinstance(x, dict) for x in node):
        for i, v in enumerate(node):
            yield from paths(v, (*prefix, i))


def mutated(doc: dict, path: tuple, how: str, value: Any = None) -> dict:
    import copy

    out = copy.deepcopy(doc)
    parent = out
    for k in path[:-1]:
        parent = parent[k]
    last = path[-1]
    if how == "set":
        parent[last] = value
    elif how == "delete":
        del parent[last]
    else:  # an unknown key beside it
        parent["zz_unknown_key"] = 1
    return out


def mutations(doc: dict) -> Iterator[tuple[str, dict]]:
    for path in paths(doc):
        where = ".".join(map(str, path))
        yield f"{where} deleted", mutated(doc, path, "delete")
        yield f"{where} joined by an unknown key", mutated(doc, path, "unknown")
        for v in HOSTILE:
            yield f"{where} = {v!r}", mutated(doc, path, "set", v)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_no_mutation_of_an_example_spec_escapes_as_anything_but_a_one_line_error(example, tmp_path):
    import tomllib

    doc = tomllib.loads(example.read_text())
    for name in ("energy.py", "problems.py"):  # the callables the examples name, beside the copy
        (tmp_path / name).write_text((REPO / "specs" / name).read_text())
    data = example.read_text()
    for line in data.splitlines():  # keep the data path valid from the copy's folder
        if line.startswith("path = "):
            rel = tomllib.loads(line)["path"]
            _set_path(doc, rel, str((example.parent / rel).resolve()))
    spec = tmp_path / example.name
    escaped = []
    count = 0
    for what, d in mutations(doc):
        count += 1
        spec.write_text(toml_document(d))
        try:
            load_spec(spec)
        except SpecError as exc:
            bad = [line for line in exc.lines if "\n" in line or not line.startswith(f"{spec}: ")]
            if bad or not exc.lines:
                escaped.append(f"{what}: error lines not clean: {exc.lines!r}")
        except Exception as exc:  # noqa: BLE001 - exactly what this test hunts
            escaped.append(f"{what}: {type(exc).__name__}: {exc}")
    assert count > 100
    assert not escaped, f"{len(escaped)} of {count} mutations escaped:\n" + "\n".join(escaped[:40])


def _set_path(doc: dict, rel: str, absolute: str) -> None:
    for v in doc.values():
        if isinstance(v, dict):
            if v.get("path") == rel:
                v["path"] = absolute
            _set_path(v, rel, absolute)
