"""Render the HTML report (self-contained) and the PDF (same HTML, print CSS).

Templates run with autoescape and ``StrictUndefined``. WeasyPrint gets a URL fetcher that
serves only ``data:`` URIs and files inside the run directory, so a path or URL that
reaches a template from the data can never make the PDF renderer read or fetch anything else.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import jinja2
from weasyprint import HTML
from weasyprint.urls import URLFetcher

from auditor.errors import RunDirError
from auditor.report.context import report_context
from auditor.report.templating import environment, stylesheet
from auditor.run import AuditRun, update_run_info
from auditor.rundir import atomic_write, check_space

log = logging.getLogger(__name__)


def render_html(run: AuditRun) -> str:
    template = environment().get_template("report.html.j2")
    return template.render(**report_context(run), css=stylesheet())


def render_reports(run: AuditRun, out: Path, *, pdf: bool = True) -> dict[str, bytes]:
    """``report.html`` (and ``report.pdf``) of ``run``, by name, for the run directory
    ``out`` (the PDF renderer reads nothing outside it)."""
    html = render_html(run)
    reports = {"report.html": html.encode("utf-8")}
    if pdf:
        reports["report.pdf"] = html_to_pdf(html, base=out)
    return reports


def write_reports(run: AuditRun, out: Path, *, pdf: bool = True) -> dict[str, int]:
    """Write ``report.html`` (and ``report.pdf``) into ``out``; return their sizes in bytes."""
    reports = render_reports(run, out, pdf=pdf)
    check_space(out, reports)
    for name, payload in reports.items():
        atomic_write(out / name, payload)
    return {name: len(payload) for name, payload in reports.items()}


def rerender(run: AuditRun, out: Path, *, pdf: bool = True) -> dict[str, int]:
    """:func:`write_reports` for a run read back from disk. One that passed
    :func:`auditor.run.load_run`'s checks yet lacks something a template reads (edited by
    hand, or written by another version) gives one line naming the run, not a traceback."""
    try:
        sizes = write_reports(run, out, pdf=pdf)
    except (LookupError, TypeError, ValueError, AttributeError, jinja2.UndefinedError) as exc:
        raise RunDirError(
            f"{out}: the stored run lacks what the report needs ({type(exc).__name__}: "
            f"{str(exc)[:120]}); was it edited, or written by another auditor version?"
        ) from None
    update_run_info(out, report_bytes=sizes)
    return sizes


def html_to_pdf(html: str, *, base: Path) -> bytes:
    fetcher = RunDirFetcher(base)
    document = HTML(string=html, base_url=str(base.resolve()) + os.sep, url_fetcher=fetcher)
    return document.write_pdf()


class RunDirFetcher(URLFetcher):
    """Serves ``data:`` URIs and ``file:`` URLs inside ``root``; refuses everything else."""

    def __init__(self, root: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = root.resolve()

    def fetch(self, url: str, headers: Any = None) -> Any:
        parsed = urlparse(url)
        if parsed.scheme == "data":
            return super().fetch(url, headers)
        if parsed.scheme == "file":
            target = Path(unquote(parsed.path)).resolve()
            if target.is_relative_to(self.root):
                return super().fetch(url, headers)
        log.warning("report: refused to fetch %s", url[:200])
        raise ValueError(f"auditor refuses to fetch {url[:80]!r} while rendering the PDF")
