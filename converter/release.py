"""A release: every official checkpoint converted in one run, one summary table, SHA256SUMS.

A checkpoint that fails is recorded and the others still convert; the caller chooses the exit code.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

from converter.memory import release_memory
from converter.parity import ParityError, ParityReport
from converter.pipeline import Conversion, convert
from cvt_spec import OFFICIAL_CHECKPOINTS, InputError, OutputError, locate_official, variant_spec
from cvt_spec.artifacts import WEIGHTS_SUFFIX
from cvt_spec.atomic import write_text_file, writing

SUMS_FILE = "SHA256SUMS"


@dataclass
class Outcome:
    name: str
    seconds: float = 0.0
    report: ParityReport = None  # None when the conversion stopped before parity or skipped it
    sha256: str = None  # of the written weights file
    error: str = None  # why nothing was written

    @property
    def written(self) -> bool:
        return self.error is None


def official_jobs(checkpoint_dir, out_dir, synthetic: bool = False, **job_fields) -> tuple[list, list]:
    """(jobs, missing paths) for the seven official checkpoints, under their artifact names.

    Args:
        synthetic: all seven on seeded synthetic checkpoints; no file is needed.
        **job_fields: further `Conversion` fields shared by every job (seed, atol, parity, command).
    """
    if synthetic:
        found, missing = [(official, None) for official in OFFICIAL_CHECKPOINTS], []
    else:
        found, missing = locate_official(checkpoint_dir)
    jobs = [
        Conversion(
            spec=variant_spec(official.variant), num_classes=official.num_classes,
            resolution=(official.resolution, official.resolution), name=official.artifact_name,
            out_dir=Path(out_dir), checkpoint=path, configuration=official.variant,
            spec_source=f"official checkpoint {official.file_name}", **job_fields,
        )
        for official, path in found
    ]
    return jobs, missing


def run_release(jobs: list[Conversion], progress=print) -> list[Outcome]:
    """Converts every job in turn; returns one `Outcome` per job.

    Raises:
        OutputError: the output directory cannot take an artifact; the run stops there.
    """
    outcomes = []
    for number, job in enumerate(jobs, 1):
        progress(f"[{number}/{len(jobs)}] {job.name}")
        outcome = Outcome(job.name)
        started = time.perf_counter()
        try:
            _, manifest_path, outcome.report = convert(job, progress)
            outcome.sha256 = json.loads(manifest_path.read_text())["artifact"]["sha256"]
        except ParityError as error:
            outcome.report, outcome.error = error.report, str(error)
        except OutputError:
            raise
        except InputError as error:
            outcome.error = str(error)
        outcome.seconds = time.perf_counter() - started
        outcomes.append(outcome)
        release_memory()
    return outcomes


def _verdict(outcome):
    if outcome.report is not None:
        return "passed" if outcome.report.passed else "FAILED"
    return "error" if outcome.error else "skipped"


def _logits_max_abs(report):
    diffs = {d.output: d.max_abs for d in report.diffs}
    value = diffs.get("logits", diffs.get("features"))
    return f"{value:.3e}"


def summary_table(outcomes: list[Outcome]) -> str:
    """One line per artifact: parity verdict, logits max abs diff, worst output, seconds, sha256."""
    lines = [f"{'artifact':<22}{'parity':<8}{'logits':>11}  {'worst output':<24}{'seconds':>8}  sha256 of .weights.h5"]
    for o in outcomes:
        logits = "-" if o.report is None else _logits_max_abs(o.report)
        worst = "-" if o.report is None else f"{o.report.worst.output} {o.report.worst.max_abs:.3e}"
        digest = o.sha256 or "not written"
        lines.append(f"{o.name:<22}{_verdict(o):<8}{logits:>11}  {worst:<24}{o.seconds:>8.1f}  {digest}")
    lines.extend(f"{o.name}: {o.error}" for o in outcomes if o.error)
    return "\n".join(lines)


def write_sha256sums(out_dir, outcomes: list[Outcome]) -> Path | None:
    """Writes OUT/SHA256SUMS (`sha256sum -c` format) for every written artifact; returns its path or None."""
    written = [o for o in outcomes if o.written]
    if not written:
        return None
    path = Path(out_dir) / SUMS_FILE
    with writing(path) as staged:
        write_text_file(staged, "".join(f"{o.sha256}  {o.name}{WEIGHTS_SUFFIX}\n" for o in written))
    return path
