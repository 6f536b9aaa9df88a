"""Load: the classifier under audit (:mod:`.load`, :mod:`.hub`, :mod:`.weights`), what its
calls return (:mod:`.outputs`), and the layer a CAM reads (:mod:`.layers`)."""

from auditor.models.layers import MIN_CAM_CELLS, Layout, TargetLayer, resolve_target_layer
from auditor.models.load import LoadedModel, load_model
from auditor.models.outputs import (
    count_outputs,
    is_scripted,
    logits_of,
    penultimate,
    select_logits,
)
from auditor.models.weights import file_sha256, read_state_dict

__all__ = [
    "MIN_CAM_CELLS",
    "Layout",
    "LoadedModel",
    "TargetLayer",
    "count_outputs",
    "file_sha256",
    "is_scripted",
    "load_model",
    "logits_of",
    "penultimate",
    "read_state_dict",
    "resolve_target_layer",
    "select_logits",
]
