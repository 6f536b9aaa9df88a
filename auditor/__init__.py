"""auditor: find the classes an image classifier solves through spurious cues."""

from auditor._version import __version__
from auditor.attribution import attribute
from auditor.config import AuditConfig, DetectConfig
from auditor.report.notebook import register_display
from auditor.run import AuditRun, load_run, save_run
from auditor.runner.pipeline import audit

register_display()  # in a notebook, an AuditRun shows its verdict and class table

__all__ = [
    "AuditConfig",
    "AuditRun",
    "DetectConfig",
    "__version__",
    "attribute",
    "audit",
    "load_run",
    "save_run",
]
