"""Attribution maps, computed for a batch in as few passes as the methods allow."""

from auditor.attribution.engine import METHODS, Attribution, attribute, compute

__all__ = ["METHODS", "Attribution", "attribute", "compute"]
