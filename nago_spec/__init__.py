"""nago-spec: Neural Architecture Generator Optimization from a TOML spec."""

__version__ = "0.1.0"
