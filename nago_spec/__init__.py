"""nago-spec: Neural Architecture Generator Optimization from a TOML spec."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Study imports the run loop; importing nago_spec alone (as every worker does) stays light
    if name == "Study":
        from nago_spec.study import Study

        return Study
    raise AttributeError(f"module 'nago_spec' has no attribute {name!r}")


__all__ = ["Study", "__version__"]
