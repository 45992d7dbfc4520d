"""The per-image results of `convert.py evaluate`: a CSV appended batch by batch, which is also the resume file.

Its first line fingerprints the run (artifact, data listing, reference, transform); a resume with another
fingerprint is refused. A line cut short by a kill is dropped on resume; every other line is a finished image.
"""

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cvt_spec import InputError, OutputError

FORMAT = "cvt-convert evaluate results v1"
COLUMNS = ("path", "label", "keras_top5", "reference_top5", "max_abs_diff", "skipped")


class ResultsFileError(InputError):
    """A results file that cannot be resumed: another run's, or damaged; names the file and line."""


@dataclass(frozen=True)
class ImageResult:
    """One image's outcome: the top-5 class indices of each framework, or why it was skipped."""

    path: str
    label: int
    keras_top5: tuple = ()
    reference_top5: tuple | None = None
    max_abs_diff: float | None = None
    skipped: str | None = None  # the reason; the other results are then empty


def listing_sha256(items) -> str:
    """sha256 of an image set's listing: every (relative path, class) in order."""
    digest = hashlib.sha256()
    for path, label in items:
        digest.update(f"{path}\t{label}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _row(result: ImageResult) -> list:
    def classes(top):
        return "" if top is None else " ".join(map(str, top))

    diff = "" if result.max_abs_diff is None else repr(result.max_abs_diff)  # repr reads back exactly
    return [result.path, result.label, classes(result.keras_top5), classes(result.reference_top5), diff,
            result.skipped or ""]


def _parse(row: list, where: str) -> ImageResult:
    if len(row) != len(COLUMNS):
        raise ResultsFileError(f"{where}: expected the {len(COLUMNS)} columns {','.join(COLUMNS)}, got {len(row)}")
    path, label, keras, reference, diff, skipped = row
    try:
        return ImageResult(path, int(label), tuple(map(int, keras.split())),
                           tuple(map(int, reference.split())) if reference or diff else None,
                           float(diff) if diff else None, skipped or None)
    except ValueError as error:
        raise ResultsFileError(f"{where}: not a row of evaluate results ({error})") from None


class ResultsLog:
    """The results CSV of one run, open for appending; `done` holds what earlier runs finished."""

    def __init__(self, path, fingerprint: dict, resume: bool):
        """Starts the file, or with `resume` reads it back after checking its fingerprint.

        Raises:
            ResultsFileError: the file exists without `resume`, or with `resume` is another run's or damaged.
            OutputError: the file cannot be written.
        """
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.done: dict[str, ImageResult] = {}
        header = f"# {FORMAT} {json.dumps(fingerprint, sort_keys=True)}\n"
        try:
            if resume and self.path.exists():
                self._read_back(header)
            elif self.path.exists():
                raise ResultsFileError(f"{self.path}: holds the results of an earlier run; pass --resume to "
                                       "continue it, or delete it to start again")
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._write(header + ",".join(COLUMNS) + "\n", mode="x")
        except OSError as error:
            raise OutputError(f"cannot write {self.path}: {error.strerror or error}") from None

    def _read_back(self, header: str) -> None:
        data = self.path.read_bytes()
        if not data.endswith(b"\n"):  # the last line was cut by a kill mid-write: that image is redone
            data = data[: data.rfind(b"\n") + 1]
            os.truncate(self.path, len(data))
        lines = data.decode("utf-8", "surrogateescape").splitlines()
        if not lines or not lines[0].startswith(f"# {FORMAT} "):
            raise ResultsFileError(f"{self.path}:1: not a cvt-convert evaluate results file")
        try:
            theirs = json.loads(lines[0][len(FORMAT) + 3:])
        except json.JSONDecodeError:
            raise ResultsFileError(f"{self.path}:1: damaged fingerprint line") from None
        if lines[0] + "\n" != header:
            differ = sorted(key for key in {*theirs, *self.fingerprint} if theirs.get(key) != self.fingerprint.get(key))
            shown = "; ".join(f"{key} {theirs.get(key)} there, {self.fingerprint.get(key)} now" for key in differ)
            raise ResultsFileError(f"{self.path}: the results of another run, not resumed ({shown}); delete it or "
                                   "pass another --json")
        for number, row in enumerate(csv.reader(lines[2:]), 3):
            result = _parse(row, f"{self.path}:{number}")
            self.done[result.path] = result

    def _write(self, text: str, mode: str = "a") -> None:
        with open(self.path, mode, encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def append(self, results: list[ImageResult]) -> None:
        """Writes the rows of one batch in one write, flushed to the disk."""
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(_row(result) for result in results)
        try:
            self._write(buffer.getvalue())
        except OSError as error:
            raise OutputError(f"cannot write {self.path}: {error.strerror or error}") from None
        self.done.update((result.path, result) for result in results)
