"""Exit codes and one-line error reporting for the CLI.

0: success; 1: parity failed; 2: bad input or usage. Errors are one line on stderr, no traceback.
"""

import contextlib
import os
import sys

import click

EXIT_OK, EXIT_PARITY, EXIT_BAD_INPUT = 0, 1, 2


class BadInput(click.ClickException):
    """A user error, reported as one line with exit code 2."""

    exit_code = EXIT_BAD_INPUT


class ParityFailed(click.ClickException):
    exit_code = EXIT_PARITY


@contextlib.contextmanager
def quiet_native_stderr(enabled=True):
    """Sends what native libraries write to fd 2 (TensorFlow's absl/oneDNN lines) to /dev/null.

    Python's sys.stderr keeps the real stderr, so the CLI's own messages still reach the user.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    previous = sys.stderr
    sys.stderr = open(saved, "w", buffering=1, closefd=False)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = previous
        os.dup2(saved, 2)
        os.close(saved)


def one_line(message):
    return " ".join(str(message).split())


def report_and_exit(error):
    """Prints `error: <message>` as one line and exits with the error's code."""
    if isinstance(error, click.exceptions.Exit):
        sys.exit(error.exit_code)
    if isinstance(error, click.Abort):
        print("error: aborted", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    code = getattr(error, "exit_code", EXIT_BAD_INPUT)
    message = error.format_message() if isinstance(error, click.ClickException) else str(error)
    print(f"error: {one_line(message)}", file=sys.stderr)
    sys.exit(code)
