"""`convert.py --all`: jobs for the official checkpoints found, one summary table, SHA256SUMS."""

import hashlib
import shutil
import subprocess

import pytest

from converter.pipeline import Conversion
from converter.release import SUMS_FILE, official_jobs, run_release, summary_table, write_sha256sums
from cvt_spec import OFFICIAL_CHECKPOINTS, normalize_spec, variant_spec
from tests.conftest import run_cli, tiny_spec, visible_names


def test_jobs_are_made_for_the_files_found_and_the_rest_listed_missing(tmp_path):
    found = [OFFICIAL_CHECKPOINTS[1], OFFICIAL_CHECKPOINTS[6]]
    for official in found:
        (tmp_path / official.file_name).write_bytes(b"placeholder")
    jobs, missing = official_jobs(tmp_path, tmp_path / "out", seed=3)
    assert [job.name for job in jobs] == ["cvt-13-384x384_1k", "cvt-w24-384x384_22k"]
    assert [job.checkpoint for job in jobs] == [tmp_path / official.file_name for official in found]
    assert jobs[1].spec == variant_spec("cvt-w24") and jobs[1].resolution == (384, 384)
    assert all(job.seed == 3 and job.num_classes == 1000 for job in jobs)
    assert len(missing) == 5 and tmp_path / "CvT-21-224x224-IN-1k.pth" in missing


def test_synthetic_release_is_all_seven_without_files(tmp_path):
    jobs, missing = official_jobs(tmp_path / "nowhere", tmp_path, synthetic=True)
    assert missing == [] and [job.checkpoint for job in jobs] == [None] * 7
    assert [job.name for job in jobs] == [official.artifact_name for official in OFFICIAL_CHECKPOINTS]


def test_one_failure_does_not_stop_the_others_and_sums_list_only_written_files(tmp_path):
    spec = normalize_spec(tiny_spec())
    job = {"spec": spec, "num_classes": 10, "resolution": (40, 40), "out_dir": tmp_path}
    jobs = [
        Conversion(name="tight", atol=1e-12, **job),
        Conversion(name="broken", checkpoint=tmp_path / "absent.pth", **job),
        Conversion(name="good", **job),
    ]
    outcomes = run_release(jobs, progress=lambda _: None)
    assert [o.written for o in outcomes] == [False, False, True]
    assert outcomes[0].report is not None and not outcomes[0].report.passed
    assert "absent.pth: no such file" in outcomes[1].error
    table = summary_table(outcomes).splitlines()
    assert table[1].split()[:2] == ["tight", "FAILED"]
    assert table[2].split()[:2] == ["broken", "error"] and "not written" in table[2]
    good = table[3].split()
    assert good[:2] == ["good", "passed"]
    assert good[2] == f"{next(d.max_abs for d in outcomes[2].report.diffs if d.output == 'logits'):.3e}"
    assert good[-1] == hashlib.sha256((tmp_path / "good.weights.h5").read_bytes()).hexdigest()
    assert "broken: " in table[-1]

    sums = write_sha256sums(tmp_path, outcomes)
    assert sums.read_text() == f"{good[-1]}  good.weights.h5\n"
    if shutil.which("sha256sum"):  # the standard tool agrees
        check = subprocess.run(["sha256sum", "-c", SUMS_FILE], cwd=tmp_path, capture_output=True, text=True)
        assert check.returncode == 0 and check.stdout == "good.weights.h5: OK\n"
    assert visible_names(tmp_path) == [SUMS_FILE, "good.json", "good.weights.h5"]


def test_all_without_checkpoints_is_refused_naming_the_directory(tmp_path):
    result = run_cli("--all", "--out", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "none of the 7 official checkpoints is in checkpoints/" in result.stderr
    assert "CvT-13-224x224-IN-1k.pth" in result.stderr and "--all --synthetic" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra", [["--config", "cvt-13"], ["--res", "384"], ["--name", "x", "--version", "1k"]])
def test_all_refuses_single_conversion_options(tmp_path, extra):
    result = run_cli("--all", *extra, cwd=tmp_path)
    assert result.returncode == 2
    assert "--all converts the official checkpoints under their own names; drop " + extra[0] in result.stderr


def test_all_reports_a_bad_checkpoint_in_the_table_and_exits_2(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "CvT-21-224x224-IN-1k.pth").write_bytes(b"not a checkpoint at all")
    result = run_cli("--all", "--out", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "checkpoints refused for cvt-21-224x224_1k" in result.stderr
    lines = result.stdout.splitlines()
    assert next(line for line in lines if line.startswith("cvt-21-224x224_1k ")).split()[:2] == [
        "cvt-21-224x224_1k", "error"]
    assert any(line.startswith("missing from checkpoints/, not converted: CvT-13-224x224-IN-1k.pth") for line in lines)
    assert not (tmp_path / "out" / SUMS_FILE).exists()
