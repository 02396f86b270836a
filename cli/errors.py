"""How the command ends a failure: one line on stderr, exit 2 for bad input and 1 for anything else."""

from __future__ import annotations

import typer
from typer._click import Context

from configs import ConfigError, InputError

# Errors that mean the user's input is wrong (a file, column, format, value, config key, or a step
# not run yet): one line, exit 2. The parts' own "not there yet" errors are LookupErrors of their own
# (no champion, no tuning trial, no such job); a bare KeyError or IndexError is a bug, not input.
USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    InputError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)
BAD_INPUT_EXIT = 2
FAILED_EXIT = 1


def is_user_error(error: Exception) -> bool:
    if isinstance(error, USER_ERRORS):
        return True
    return isinstance(error, LookupError) and not isinstance(error, KeyError | IndexError)


def one_line(message: str) -> str:
    """A message of several lines (a config with several wrong keys, a YAML error with its excerpt)
    as one line: its non-blank lines joined by "; " (a line that only points with ^ is dropped)."""
    lines = [line.strip() for line in message.strip().splitlines()]
    lines = [line for line in lines if line and line.strip("^ ")]
    if not lines:
        return message.strip()
    # "file: key a ...", "file: key b ..." -> "file: key a ...; key b ..."
    prefix = lines[0].split(": ", 1)[0] + ": "
    if len(lines) > 1 and prefix != lines[0] and all(line.startswith(prefix) for line in lines):
        lines = [lines[0], *(line.removeprefix(prefix) for line in lines[1:])]
    return "; ".join(lines)


def echo_error(message: str) -> None:
    typer.echo(f"error: {one_line(message)}", err=True)


def debugging(ctx: Context) -> bool:
    """`tradewind --debug ...`: show tracebacks instead of one-line errors."""
    return bool(ctx.find_root().params.get("debug"))
