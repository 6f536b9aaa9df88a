"""Attribution maps, computed for a batch in as few passes as the methods allow."""

from auditor.attribution.engine import (
    Attribution,
    attribute,
    attribute_many,
    compute,
    compute_many,
)
from auditor.attribution.methods import CAM_METHODS, EAGER_METHODS, METHODS, REGISTRY
from auditor.attribution.options import (
    GradientOptions,
    IntegratedGradientsOptions,
    SmoothGradOptions,
)
from auditor.attribution.registry import FusedPass, MethodRegistry, MethodSpec
from auditor.attribution.targets import LayerFilter

__all__ = [
    "CAM_METHODS",
    "EAGER_METHODS",
    "METHODS",
    "REGISTRY",
    "Attribution",
    "FusedPass",
    "GradientOptions",
    "IntegratedGradientsOptions",
    "LayerFilter",
    "MethodRegistry",
    "MethodSpec",
    "SmoothGradOptions",
    "attribute",
    "attribute_many",
    "compute",
    "compute_many",
]
