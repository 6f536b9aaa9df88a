"""Attribution maps, computed for a batch in as few passes as the methods allow."""

from auditor.attribution.engine import CAM_METHODS, METHODS, Attribution, attribute, compute
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
    "compute",
]
