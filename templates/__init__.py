"""Jinja2 templates and CSS of the audit report (installed as ``auditor.templates``)."""
