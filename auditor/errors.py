"""One error hierarchy. Each error also subclasses the matching built-in, so callers
that catch ``ValueError`` or ``FileNotFoundError`` keep working.

Only ``cli.py`` maps these to exit codes; the library raises and logs, never prints.
"""

from __future__ import annotations


class AuditorError(Exception):
    """Base of every error auditor raises on purpose."""


class ConfigError(AuditorError, ValueError):
    """A setting or option is invalid (bad value, unknown name, conflicting flags)."""


class DataError(AuditorError, ValueError):
    """An annotation file, manifest or image folder cannot be used as a whole."""


class ModelError(AuditorError, ValueError):
    """A model spec, checkpoint or architecture cannot be loaded or used."""


class AttributionError(AuditorError, RuntimeError):
    """An attribution method cannot be computed for this model or input."""


class RunDirError(AuditorError, OSError):
    """The run directory cannot be written, is held by another process, or is damaged."""


class HistoryError(RunDirError):
    """The run history cannot be opened, read or written (locked, read-only, damaged, or from
    a newer auditor). An audit still writes its run directory; only the history misses it."""


class OutputError(AuditorError, OSError):
    """A file to write already exists (and overwriting was not asked for) or cannot be written."""


class DistributedError(AuditorError, RuntimeError):
    """Another process of a torchrun audit failed, so this one stops too."""
