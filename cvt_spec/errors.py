"""The project's own exception types: what the CLI reports as bad input (exit 2) or a failed check (exit 1).

Anything raised that is not one of these is a bug, and the CLI says so (exit 3).
"""

import reprlib

# A value from a file goes into a message this short, however large or deep it is (a YAML alias bomb).
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 3, 80, 80, 40
_SHORT.maxtuple = _SHORT.maxlist = _SHORT.maxdict = _SHORT.maxset = 8


def shown(value) -> str:
    """`repr(value)` cut to a few dozen characters, for messages about values read from outside."""
    return _SHORT.repr(value)


class CvtError(Exception):
    """Base of every error cvt-convert raises on purpose."""


class InputError(CvtError, ValueError):
    """A file, option, SPEC, checkpoint, image or artifact that cannot be used; the message names it.

    Also a `ValueError`, so library callers can catch it as Python's usual bad-argument error.
    """


class OutputError(InputError):
    """An output that cannot be written (full disk, file size limit, permissions); names the final path."""


class CheckFailed(CvtError):
    """Two computations that must agree (parity of a port, of an export) differ above the tolerance."""


class SpecError(InputError):
    """A SPEC that the official model could not build, naming the key and the value."""


class InputFileError(InputError):
    """A path that cannot be read as an input file; the message names the path."""


class RecognitionError(InputError):
    """A checkpoint or file name that does not say unambiguously what it holds; names what is missing."""


class ArtifactError(InputError):
    """A converted artifact that is missing, unreadable, damaged, or does not fit the model asked for."""


class ArtifactNotFound(ArtifactError, FileNotFoundError):
    """An artifact file that does not exist; also a `FileNotFoundError`."""
