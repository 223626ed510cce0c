"""Tests of nago_spec.callables: module and file references, failures as short reasons, the cache."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from nago_spec.callables import CallableError, is_file_ref, load_callable, resolve_ref, split_ref


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def bump_mtime(path: Path) -> None:
    """Make sure a rewritten file has a new mtime even on coarse-grained file systems."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_module_function():
    assert load_callable("math:sqrt", Path("."))(9) == 3.0


def test_dotted_attribute():
    assert load_callable("pathlib:Path.cwd", Path("."))() == Path.cwd()


def test_callable_error_is_an_import_error():
    assert issubclass(CallableError, ImportError)


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("no_such_module_xyz:f", "no module named 'no_such_module_xyz'"),
        ("math:nope", "module 'math' has no function 'nope'"),
        ("math:pi", "'pi' is not callable"),
        ("math", "must read 'module:function' or 'file.py:function'"),
        ("math:", "must read 'module:function'"),
    ],
)
def test_module_failures(ref, reason):
    with pytest.raises(CallableError, match=reason):
        load_callable(ref, Path("."))


def test_file_function(tmp_path):
    write(tmp_path / "problems.py", "def zdt(p):\n    return {'f1': p['x'], 'f2': 1 - p['x']}\n")
    fn = load_callable("problems.py:zdt", tmp_path)
    assert fn({"x": 0.25}) == {"f1": 0.25, "f2": 0.75}


def test_missing_file(tmp_path):
    with pytest.raises(CallableError, match="^no file energy.py next to the spec$"):
        load_callable("energy.py:estimate", tmp_path)


def test_missing_function_in_file(tmp_path):
    write(tmp_path / "problems.py", "def zdt(p):\n    return 0.0\n")
    with pytest.raises(CallableError, match="module 'problems.py' has no function 'nope'"):
        load_callable("problems.py:nope", tmp_path)


def test_file_raising_at_import(tmp_path):
    write(tmp_path / "broken.py", "raise ValueError('boom')\n")
    with pytest.raises(CallableError, match="^the module raised ValueError: boom$"):
        load_callable("broken.py:f", tmp_path)


def test_file_with_syntax_error(tmp_path):
    write(tmp_path / "syntax.py", "def f(:\n")
    with pytest.raises(CallableError, match="the module raised SyntaxError"):
        load_callable("syntax.py:f", tmp_path)


def test_file_missing_dependency_is_not_a_missing_module(tmp_path):
    write(tmp_path / "deps.py", "import no_such_dependency_xyz\n")
    with pytest.raises(CallableError, match="the module raised ModuleNotFoundError"):
        load_callable("deps.py:f", tmp_path)


def test_directory_not_left_on_sys_path_and_siblings_import(tmp_path):
    write(tmp_path / "helper_for_nago_test.py", "def twice(x):\n    return 2 * x\n")
    write(tmp_path / "obj.py", "from helper_for_nago_test import twice\ndef f(p):\n    return twice(p)\n")
    before = list(sys.path)
    assert load_callable("obj.py:f", tmp_path)(2) == 4
    assert sys.path == before
    with pytest.raises(CallableError):
        write(tmp_path / "bad.py", "raise RuntimeError('x')\n")
        load_callable("bad.py:f", tmp_path)
    assert sys.path == before
    sys.modules.pop("helper_for_nago_test", None)


def test_same_file_name_in_two_folders_does_not_collide(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write(tmp_path / "a" / "problems.py", "def f():\n    return 'a'\n")
    write(tmp_path / "b" / "problems.py", "def f():\n    return 'b'\n")
    assert load_callable("problems.py:f", tmp_path / "a")() == "a"
    assert load_callable("problems.py:f", tmp_path / "b")() == "b"


def test_file_imported_once_until_it_changes(tmp_path):
    counter = tmp_path / "imports.txt"
    src = f"open({str(counter)!r}, 'a').write('x')\ndef f():\n    return RESULT\n"
    path = write(tmp_path / "counted.py", src.replace("RESULT", "0"))
    first = load_callable("counted.py:f", tmp_path)
    assert load_callable("counted.py:f", tmp_path) is first
    assert load_callable(f"{path}:f", Path("/")) is first  # absolute path, same file
    assert counter.read_text() == "x"
    write(path, src.replace("RESULT", "1"))
    bump_mtime(path)
    assert load_callable("counted.py:f", tmp_path)() == 1
    assert counter.read_text() == "xx"


def test_dataclass_in_user_file(tmp_path):
    # A dataclass needs its module in sys.modules while the class is built.
    write(tmp_path / "dc.py", "from dataclasses import dataclass\n@dataclass\nclass P:\n    x: int = 1\n"
          "def f():\n    return P().x\n")
    assert load_callable("dc.py:f", tmp_path)() == 1


def test_resolve_and_split(tmp_path):
    assert resolve_ref("problems.py:zdt", tmp_path) == f"{tmp_path.resolve() / 'problems.py'}:zdt"
    assert resolve_ref("sub/problems.py:zdt", tmp_path) == f"{tmp_path.resolve() / 'sub' / 'problems.py'}:zdt"
    assert resolve_ref("pkg.mod:fn", tmp_path) == "pkg.mod:fn"
    assert split_ref("C:/x/y.py:f") == ("C:/x/y.py", "f")
    assert is_file_ref("a.py:f") and not is_file_ref("a.b:f")
