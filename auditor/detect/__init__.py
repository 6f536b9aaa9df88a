"""Decide which classes a model solves through cues outside the object."""

from auditor.detect.findings import ClassResult, Finding
from auditor.detect.rule import class_results, verdict
from auditor.detect.stats_util import bootstrap_ci

__all__ = ["ClassResult", "Finding", "bootstrap_ci", "class_results", "verdict"]
