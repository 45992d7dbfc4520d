"""Exit codes and one-line error reporting for the CLI.

0: success; 1: a check failed (parity); 2: bad input or usage; 3: a bug; 130: interrupted. One line on
stderr, no traceback: bad input is the project's `InputError`, a failed check its `CheckFailed`, and
anything else is a bug in cvt-convert or a library, said as such.
"""

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TextIO

import click

from cvt_spec import CheckFailed, InputError

EXIT_OK, EXIT_PARITY, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class BadInput(InputError):
    """An option or a combination of options that cannot be used; names the option."""


class ParityFailed(CheckFailed):
    """Two frameworks' answers differ above `--atol` in a command's own comparison."""


@contextlib.contextmanager
def quiet_native_stderr(enabled: bool = True) -> Iterator[TextIO]:
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
    with open(saved, "w", buffering=1, closefd=False) as real_stderr:
        sys.stderr = sys.stdout
        try:
            yield real_stderr
        finally:
            sys.stdout.flush()
            real_stderr.flush()
            sys.stderr = previous
            os.dup2(saved, 2)
            os.close(saved)


def one_line(message) -> str:
    """The message on one line, a file name's bytes that are not UTF-8 (surrogate escapes) shown as `\\xff`."""
    text = " ".join(str(message).split())
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class ReportedError(click.ClickException):
    """A project error (`InputError` or `CheckFailed`) carried through click with its exit code."""

    def __init__(self, error: InputError | CheckFailed):
        super().__init__(one_line(error))
        self.exit_code = EXIT_BAD_INPUT if isinstance(error, InputError) else EXIT_PARITY


class Commands(click.Group):
    """A click group whose commands' project errors exit like usage errors: 2 for bad input, 1 for a check."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (InputError, CheckFailed) as error:
            raise ReportedError(error) from error


def describe_error(error: BaseException) -> tuple[int, str | None]:
    """(exit code, one-line message) for an exception that ended the CLI."""
    if isinstance(error, click.exceptions.Exit):
        return error.exit_code, None
    if isinstance(error, (KeyboardInterrupt, click.Abort)):  # click turns Ctrl-C into Abort; we ask nothing
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(error, (InputError, CheckFailed)):
        error = ReportedError(error)
    if isinstance(error, click.ClickException):
        return error.exit_code, one_line(error.format_message())
    # Anything else is a bug in cvt-convert or a library: still one line, the traceback on --debug.
    detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return EXIT_INTERNAL, one_line(f"internal error ({detail}); rerun with --debug for the traceback")


def report_and_exit(error: BaseException, stream=None) -> None:
    """Prints `error: <message>` as one line on `stream` (default stderr) and exits with the error's code."""
    code, message = describe_error(error)
    if message is not None:
        print(f"error: {message}", file=stream or sys.stderr)
    sys.exit(code)
