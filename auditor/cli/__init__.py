"""Command line: ``auditor audit | report | history | compare | probe-data | demo |
init-config``. Thin: parse, call the library, print what :mod:`auditor.report.terminal`
renders, and map errors to exit codes (:mod:`auditor.cli.group`)."""

from __future__ import annotations

import signal

from auditor.cli import audit, runs, tools  # noqa: F401  (each registers its commands)
from auditor.cli.group import EXIT_FLAGGED, EXIT_HISTORY, EXIT_REGRESSION, cli

__all__ = ["EXIT_FLAGGED", "EXIT_HISTORY", "EXIT_REGRESSION", "cli", "main"]


def main() -> None:
    # A scheduler or CI runner stops a job with SIGTERM: keep its progress as Ctrl-C does.
    signal.signal(signal.SIGTERM, _terminated)
    cli(prog_name="auditor")


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
