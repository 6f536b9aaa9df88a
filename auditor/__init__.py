"""auditor: find the classes an image classifier solves through spurious cues."""

__version__ = "0.1.0"

from auditor.attribution import attribute
from auditor.config import AuditConfig, DetectConfig
from auditor.pipeline import AuditRun, audit
from auditor.store import load_run, save_run

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
