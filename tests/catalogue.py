"""The helpers of the bad-input and bad-output catalogues: run the CLI as a user would and
hold its answer to what a user must see (the exit code, no traceback, the words)."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner, Result

from auditor.cli import cli


def invoke(*args: object) -> Result:
    """The CLI's answer; an exception the CLI did not turn into an exit code fails the test
    (a user would have seen a traceback)."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(
            f"unhandled {type(result.exception).__name__}: {result.exception}\n{result.output}"
        ) from result.exception
    assert "Traceback" not in result.output
    return result


def expect(result: Result, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert str(word) in result.output, (word, result.output)


def report_of(out: object) -> dict[str, Any]:
    """What the report of the run in ``out`` shows, as values: the report's context."""
    from auditor.report.context import report_context
    from auditor.run import load_run

    return report_context(load_run(str(out)))


def notices(out: object) -> list[str]:
    """The kinds of the notices the report of the run in ``out`` opens with (what a reader
    must know before trusting the rest)."""
    return [n.kind for n in report_of(out)["notices"]]
