"""Exit codes and one-line error reporting for the CLI.

0: success; 1: parity failed; 2: bad input or usage; 3: internal error. One line on stderr, no traceback.
"""

import contextlib
import os
import sys

import click

EXIT_OK, EXIT_PARITY, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class BadInput(click.ClickException):
    """A user error, reported as one line with exit code 2."""

    exit_code = EXIT_BAD_INPUT


class ParityFailed(click.ClickException):
    exit_code = EXIT_PARITY


@contextlib.contextmanager
def quiet_native_stderr(enabled=True):
    """Keeps stderr for the CLI's own error line; yields a text stream on the real stderr.

    What native libraries write to fd 2 (TensorFlow's absl/oneDNN lines) goes to /dev/null, and
    Python-level writes to sys.stderr (warnings, logging) go to stdout with the progress lines.
    """
    if not enabled:
        yield sys.stderr
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    previous = sys.stderr
    real_stderr = open(saved, "w", buffering=1, closefd=False)
    sys.stderr = sys.stdout
    try:
        yield real_stderr
    finally:
        sys.stdout.flush()
        real_stderr.flush()
        sys.stderr = previous
        os.dup2(saved, 2)
        os.close(saved)


def one_line(message):
    return " ".join(str(message).split())


def describe_error(error):
    """(exit code, one-line message) for an exception that ended the CLI."""
    if isinstance(error, click.exceptions.Exit):
        return error.exit_code, None
    if isinstance(error, (KeyboardInterrupt, click.Abort)):  # click turns Ctrl-C into Abort; we ask nothing
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(error, click.ClickException):
        return error.exit_code, one_line(error.format_message())
    # Anything else is a bug in cvt-convert or a library: still one line, the traceback on --debug.
    detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return EXIT_INTERNAL, one_line(f"internal error ({detail}); rerun with --debug for the traceback")


def report_and_exit(error, stream=None):
    """Prints `error: <message>` as one line on `stream` (default stderr) and exits with the error's code."""
    code, message = describe_error(error)
    if message is not None:
        print(f"error: {message}", file=stream or sys.stderr)
    sys.exit(code)
