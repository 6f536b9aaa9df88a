"""Datasets under audit: readers for annotation formats, masks and aligned transforms."""

from auditor.data.dataset import AuditDataset
from auditor.data.entries import Record, SkipReason
from auditor.data.read import DatasetInfo, read_dataset

__all__ = ["AuditDataset", "DatasetInfo", "Record", "SkipReason", "read_dataset"]
