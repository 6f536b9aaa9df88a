"""Attribution maps, computed for a batch in as few passes as the methods allow."""

from auditor.attribution.engine import (
    CAM_METHODS,
    METHODS,
    Attribution,
    attribute,
    attribute_many,
    compute,
    compute_many,
)
from auditor.attribution.options import (
    GradientOptions,
    IntegratedGradientsOptions,
    SmoothGradOptions,
)
from auditor.attribution.targets import LayerFilter

__all__ = [
    "CAM_METHODS",
    "METHODS",
    "Attribution",
    "GradientOptions",
    "IntegratedGradientsOptions",
    "LayerFilter",
    "SmoothGradOptions",
    "attribute",
    "attribute_many",
    "compute",
    "compute_many",
]
