"""The command group and the one place errors become exit codes: 0 a complete audit, 1 an
error (including an audit that scored no image or skipped more than --max-skipped), 2 a
usage error, 3 flagged with --fail-on-flag, 4 a regression with --fail-on-regression, 5 the
run directory is complete but the run history could not be read or written."""

from __future__ import annotations

import logging

import click

from auditor.errors import AuditorError, ConfigError

EXIT_FLAGGED = 3
EXIT_REGRESSION = 4
EXIT_HISTORY = 5


class _Group(click.Group):
    """Turns library errors into one line on stderr and exit code 1 (2 for bad settings)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise click.UsageError(str(exc), ctx) from None
        except AuditorError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo(
                "Interrupted. Progress is kept: run the same command again to resume.", err=True
            )
            ctx.exit(130)


@click.group(cls=_Group)
@click.version_option(package_name="auditor")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def cli(verbose: bool) -> None:
    """Audit image classifiers for shortcut learning."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    for noisy in ("weasyprint", "fontTools"):  # CSS and font-subsetting chatter
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.ERROR)


def echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)
