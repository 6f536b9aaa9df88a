"""The run record as types: ``summary.json`` read once, by one parser
(:mod:`auditor.record.parse`), into :class:`~auditor.record.summary.Summary`."""

from auditor.record.parse import RecordError
from auditor.record.summary import (
    SCHEMA_VERSION,
    ClassRecord,
    FindingRecord,
    Judged,
    Summary,
    read_summary,
)

__all__ = [
    "SCHEMA_VERSION",
    "ClassRecord",
    "FindingRecord",
    "Judged",
    "RecordError",
    "Summary",
    "read_summary",
]
