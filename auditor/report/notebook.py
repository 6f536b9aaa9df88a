"""The verdict and the class table as HTML for a notebook, from ``summary.json`` alone: no
figures, no renderer, nothing read from disk. The run record does not know its renderer:
:func:`register_display` tells IPython how to show an :class:`~auditor.run.AuditRun`, and
importing this module tells ``run.plot_class`` how to draw a class
(:func:`auditor.report.plots.class_figure`)."""

from __future__ import annotations

from typing import Any

from auditor.record import Summary
from auditor.report.context import summary_context
from auditor.report.plots import class_figure
from auditor.report.templating import environment
from auditor.run import AuditRun, draw_classes_with

draw_classes_with(class_figure)  # imported with auditor: run.plot_class always draws


def summary_html(summary: Summary) -> str:
    return environment().get_template("summary.html.j2").render(**summary_context(summary))


def run_html(run: AuditRun) -> str:
    """How a notebook shows ``run``: its verdict and class table."""
    return summary_html(run.summary)


def register_display(shell: Any = None) -> bool:
    """Show every :class:`AuditRun` with :func:`run_html` in IPython's ``shell`` (default:
    the running one); False where there is none (a script, a test)."""
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
    if shell is None:
        return False
    shell.display_formatter.formatters["text/html"].for_type(AuditRun, run_html)
    return True
