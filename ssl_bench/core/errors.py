"""Exception types. Every error a user can cause is one of these, with a message that says how to fix it.

The CLI prints ``error: <message>`` on one line and exits non-zero (traceback only with ``--debug``).
"""

from __future__ import annotations


class SSLBenchError(Exception):
    """Base class of all user-facing errors."""


class RegistryError(SSLBenchError, KeyError):
    """Unknown or duplicate name in a registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(SSLBenchError, ValueError):
    """Bad configuration key, value or preset."""


class PluginError(SSLBenchError, ImportError):
    """A ``--plugin`` file or entry point failed to load."""


class DataError(SSLBenchError, ValueError):
    """Missing data root, malformed file, label out of range, shape mismatch."""


class MetricInputError(SSLBenchError, ValueError):
    """Invalid input to a metric: shape mismatch, non-integer labels, NaN, bad spacing."""


class TrainingError(SSLBenchError, RuntimeError):
    """Training diverged (NaN/inf loss) or a method broke its contract."""


class RunDirError(SSLBenchError, ValueError):
    """A run folder is missing, incomplete or inconsistent (e.g. on resume)."""
