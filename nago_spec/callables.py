"""User callables named in a spec: "module:function" or "file.py:function" beside the spec file."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

# resolved file -> (mtime_ns, module): a spec checked and then run imports its file once, and an
# edited file is imported afresh.
_FILE_MODULES: dict[Path, tuple[int, ModuleType]] = {}
_LOCK = threading.Lock()


class CallableError(ImportError):
    """A callable reference that cannot be loaded; the message is a short reason for a spec error line."""


def split_ref(ref: str) -> tuple[str, str]:
    """``"a/b.py:f"`` -> ``("a/b.py", "f")``; the last colon splits, so Windows drive letters survive."""
    target, sep, func = ref.rpartition(":")
    if not sep or not target.strip() or not func.strip():
        raise CallableError("must read 'module:function' or 'file.py:function'")
    return target, func


def is_file_ref(ref: str) -> bool:
    """Whether ``ref`` names a Python file (``file.py:function``) rather than an importable module."""
    return ref.rpartition(":")[0].endswith(".py")


def resolve_ref(ref: str, base_dir: Path) -> str:
    """The reference with a file path made absolute (against ``base_dir``); module references unchanged."""
    target, func = split_ref(ref)
    if not target.endswith(".py"):
        return ref
    return f"{(Path(base_dir) / target).resolve()}:{func}"


def callable_label(ref: str | Callable[..., Any]) -> str:
    """How a callable is named in messages: its reference, or a function's module and name."""
    if isinstance(ref, str):
        return ref
    return f"{getattr(ref, '__module__', None) or '?'}:{getattr(ref, '__qualname__', None) or type(ref).__name__}"


def load_callable(ref: str, base_dir: Path) -> Callable[..., Any]:
    """Import the function ``ref`` names; a relative ``file.py`` is looked up in ``base_dir``.

    Raises CallableError with a one-phrase reason when the module or function is missing, the
    module raises while importing, or the named object is not callable.
    """
    target, func = split_ref(ref)
    if target.endswith(".py"):
        module = _load_file(Path(base_dir) / target, shown=target)
        label = target
    else:
        module = _import_module(target)
        label = target
    obj: Any = module
    for part in func.split("."):  # "Class.method" and nested attributes are allowed
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CallableError(f"module '{label}' has no function '{func}'") from None
    if not callable(obj):
        raise CallableError(f"'{func}' is not callable")
    return obj


def _raised(exc: BaseException) -> CallableError:
    err = CallableError(f"the module raised {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # Only a missing *named* module is "no module"; a missing dependency of it is its own failure.
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise CallableError(f"no module named '{name}'") from None
        raise _raised(exc) from exc
    except Exception as exc:
        raise _raised(exc) from exc


def _load_file(path: Path, shown: str) -> ModuleType:
    path = path.resolve()
    if not path.is_file():
        where = "" if Path(shown).is_absolute() else " next to the spec"
        raise CallableError(f"no file {shown}{where}")
    mtime = path.stat().st_mtime_ns
    with _LOCK:
        cached = _FILE_MODULES.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        module = _exec_file(path, mtime)
        _FILE_MODULES[path] = (mtime, module)
        return module


def _exec_file(path: Path, mtime: int) -> ModuleType:
    # A unique name per (file, version), registered in sys.modules so that dataclasses and pickling
    # inside the user's file work; two files called problems.py never collide.
    digest = hashlib.sha1(f"{path}:{mtime}".encode()).hexdigest()[:12]
    name = f"_nago_user_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CallableError(f"cannot load {path.name} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # The file may import its siblings, so its directory is on sys.path while it runs, and only then.
    folder = str(path.parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise _raised(exc) from exc
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:  # the module removed it itself
            pass
    return module
