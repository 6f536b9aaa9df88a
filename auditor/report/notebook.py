"""The verdict and the class table as HTML for a notebook (``AuditRun._repr_html_``), from
``summary.json`` alone: no figures, no renderer, nothing read from disk."""

from __future__ import annotations

from typing import Any

from auditor.report.context import summary_context
from auditor.report.templating import environment


def summary_html(summary: dict[str, Any]) -> str:
    return environment().get_template("summary.html.j2").render(**summary_context(summary))
