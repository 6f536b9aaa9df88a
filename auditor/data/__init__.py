"""Datasets under audit: readers for annotation formats, masks and aligned transforms."""

from auditor.data.records import AuditDataset, Record, SkipReason, read_dataset

__all__ = ["AuditDataset", "Record", "SkipReason", "read_dataset"]
