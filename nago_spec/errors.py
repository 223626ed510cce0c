"""The one exception hierarchy of nago-spec: every user-facing failure is a NagoError."""

from __future__ import annotations


class NagoError(Exception):
    """Base of every error nago-spec raises on purpose."""


class SpecError(NagoError):
    """An invalid spec file; carries every problem found, one line each.

    Each line reads ``FILE: [section].key = value: what is wrong``.
    """

    def __init__(self, lines: list[str] | str):
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        super().__init__("\n".join(self.lines))


class RegistryError(NagoError):
    """A name that is not registered, or registered twice."""


class DataError(NagoError):
    """A data set that cannot be read: missing path, corrupt file, mismatched labels."""


class TrialError(NagoError):
    """A trial that cannot be completed (NaN loss, bad objective value, ...): stored FAILED."""


class ExportError(NagoError):
    """An ONNX export that fails or does not match torch."""


class StoreError(NagoError):
    """A run directory that cannot be used (e.g. its spec differs from the one given)."""


class RunBusy(NagoError):
    """A run directory another live process runs or exports (its lock names it)."""
