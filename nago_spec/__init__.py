"""nago-spec: Neural Architecture Generator Optimization from a TOML spec."""

import os as _os

__version__ = "0.1.0"

# pyproject installs the repository's runners/ folder as nago_spec.runners. Imported from a source
# checkout instead (tests run from the repository root), this package has no runners/ inside it, so
# the folder beside it is added to the search path of the same import.
_here = _os.path.dirname(__file__)
if not _os.path.isdir(_os.path.join(_here, "runners")) and _os.path.isfile(
    _os.path.join(_here, _os.pardir, "runners", "__init__.py")
):
    __path__.append(_os.path.dirname(_os.path.abspath(_here)))


def __getattr__(name: str):
    # Study imports the run loop; importing nago_spec alone (as every worker does) stays light
    if name == "Study":
        from nago_spec.study import Study

        return Study
    raise AttributeError(f"module 'nago_spec' has no attribute {name!r}")


__all__ = ["Study", "__version__"]
