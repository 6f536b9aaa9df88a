"""Audit settings. Each concern in its own module:

- :mod:`~auditor.config.settings`: one setting described once (meaning, option, range);
- :mod:`~auditor.config.schema`: the settings, :class:`AuditConfig` and :class:`DetectConfig`;
- :mod:`~auditor.config.checks`: every setting checked once, by type and range;
- :mod:`~auditor.config.read` and :mod:`~auditor.config.write`: audit.toml in and out.

The input normalisation's parser lives with the transform that applies it
(:func:`auditor.data.transforms.parse_normalize`)."""

from auditor.config.read import config_from_dict, load_config
from auditor.config.schema import AuditConfig, DetectConfig
from auditor.config.settings import Setting, described, settings_of
from auditor.config.write import config_toml, write_config

__all__ = [
    "AuditConfig",
    "DetectConfig",
    "Setting",
    "config_from_dict",
    "config_toml",
    "described",
    "load_config",
    "settings_of",
    "write_config",
]
