"""SIGKILL at every syscall that changes the output directory: what is there afterwards is whole.

Each case traces one CLI run under strace, then runs it again once per kill point, each time on a
fresh copy of the directory as it was before, killed on entering that syscall (tests/kill.py).
After every kill: the artifact (or export) is the complete previous one or the complete new one,
never a mix and never neither when there was one before; the next write removes what was left.
"""

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from converter.export import record_export
from cvt_spec import ArtifactNotFound, OutputError
from cvt_spec.artifacts import path_sha256, read_manifest
from cvt_spec.atomic import remove_stale
from tests.conftest import TINY_SPEC, visible_names
from tests.corpus import record
from tests.kill import STRACE, ServerPool, kill_at, kill_points, trace

# Minutes of runs (one per kill point): in the slow tier, with the full-size runs.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def strace_installed():
    assert STRACE, "these tests need strace (Debian package strace; `make env` installs it)"
EVERY_WRITE = os.environ.get("CVT_KILL_EVERY_WRITE") == "1"
PARALLEL = 2


def _convert(workdir, out, seed):
    return ["--spec", str(workdir / "spec.json"), "--num-classes", "10", "--res", "48", "--synthetic", "--no-parity",
            "--seed", str(seed), "--out", str(out), "--name", "tiny"]


@pytest.fixture(scope="module")
def servers():
    """One CLI server per run made side by side (tests/kill.py): the runs start after the imports."""
    pool = ServerPool(PARALLEL)
    yield pool
    pool.close()


def _run(servers, argv, cwd):
    """`convert.py ARGV` in `cwd`, untraced; fails on a non-zero exit."""
    with servers.borrow() as server:
        _, returncode = server.run(argv, cwd)
    assert returncode == 0, (Path(cwd) / "run.out").read_text()[-3000:]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, servers):
    """A SPEC file and two complete artifacts of it (seeds 0 and 1), written by the CLI."""
    root = tmp_path_factory.mktemp("kill")
    (root / "spec.json").write_text(json.dumps(TINY_SPEC))
    for seed in (0, 1):
        _run(servers, _convert(root, root / f"seed{seed}", seed), root)
    return root


def _manifests(workdir):
    return {seed: read_manifest(workdir / f"seed{seed}" / "tiny") for seed in (0, 1)}


def _sweep(servers, workdir, name, command, prepare, check):
    """Traces `command(out)` on a prepared directory, then kills a run at each point and checks the result.

    Returns the kill points, for the table in the closing note.
    """
    base = workdir / name
    traced = base / "trace"
    traced.mkdir(parents=True)
    prepare(traced / "out")
    with servers.borrow() as server:
        points = kill_points(trace(server, command(traced / "out"), traced / "out", traced), EVERY_WRITE)
    assert points

    def kill_one(index_and_point):
        index, point = index_and_point
        run = base / f"k{index:03d}"
        run.mkdir()
        prepare(run / "out")
        with servers.borrow() as server:
            kill_at(server, command(run / "out"), point, run / "out", run)
        held = check(run / "out")
        record(f"kill {name}: {point.describe()}", "SIGKILL", held)
        return point, held

    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(kill_one, enumerate(points)))


def _artifact_state(out, manifests):
    """`seed 0`, `seed 1` or `none`: which complete artifact `out` holds; fails on anything else."""
    try:
        manifest = read_manifest(out / "tiny")  # both files, sha256 checked
    except ArtifactNotFound:
        return "none"
    seed = manifest["source"]["seed"]
    assert _but_run(manifest) == _but_run(manifests[seed]), f"a mix: {out}"
    return f"seed {seed}"


def _but_run(manifest):
    return {key: value for key, value in manifest.items() if key != "run"}  # the command and times of the run


def _cleaned_up(out, state):
    """After the dead writer's leftovers are removed, only the artifact (or, for none, nothing) is there."""
    if not out.exists():
        return
    remove_stale(out)
    names = sorted(p.name for p in out.iterdir())
    if state == "none":  # at most the two names, dangling, waiting for the first commit
        assert all(p.is_symlink() and not p.exists() for p in out.iterdir()), names
    elif not (out / ".tiny.current").is_symlink():  # killed before the earlier layout's files were touched
        assert names == ["tiny.json", "tiny.weights.h5"] and not (out / "tiny.json").is_symlink(), names
    elif any(not (out / name).is_symlink() for name in ("tiny.json", "tiny.weights.h5")):
        # Killed while the earlier layout's files were being put behind links: a plain file left is
        # the current version's file itself (a hard link to it), so both names still give one artifact.
        version = out / ".tiny.current"
        assert all(os.path.samefile(out / name, version / name) for name in ("tiny.json", "tiny.weights.h5"))
    else:
        assert visible_names(out) == ["tiny.json", "tiny.weights.h5"]


def _copy(source):
    return lambda out: shutil.copytree(source, out, symlinks=True)


def _plain_copy(source):
    """The earlier layout: the two files as plain files (what `cp` of the links gives)."""

    def prepare(out):
        out.mkdir()
        for name in ("tiny.weights.h5", "tiny.json"):
            shutil.copy(source / name, out / name)

    return prepare


# What a kill can leave, per case. In a new directory the switch (one rename) is the last call that
# touches it, so every kill point comes before it; over an artifact the old version is removed after it.
CONVERSIONS = {
    "new directory": (lambda workdir: lambda out: None, {"none"}),
    "over an artifact": (lambda workdir: _copy(workdir / "seed0"), {"seed 0", "seed 1"}),
    "over an artifact of the earlier two-file layout": (lambda workdir: _plain_copy(workdir / "seed0"),
                                                        {"seed 0", "seed 1"}),
}


@pytest.mark.parametrize("case", list(CONVERSIONS))
def test_a_conversion_killed_at_any_point_leaves_the_old_or_the_new_artifact(servers, workdir, case):
    make_prepare, allowed = CONVERSIONS[case]
    manifests = _manifests(workdir)

    def check(out):
        state = _artifact_state(out, manifests)
        assert state in allowed, (case, state)
        _cleaned_up(out, state)
        return state

    results = _sweep(servers, workdir, case.replace(" ", "-"), lambda out: _convert(workdir, out, 1),
                     make_prepare(workdir), check)
    states = [held for _, held in results]
    # Every outcome possible happens: kill points before the switch keep the old state, those after hold
    # the new one, in that order (never back to the old).
    assert set(states) == allowed, states
    assert states == sorted(states, key=lambda held: held == "seed 1"), states


def _export(artifact_dir, export_format):
    return ["export", str(artifact_dir / "tiny"), "--format", export_format, "--samples", "2", "--force"]


def _export_state(out, export_format, previous):
    """`none`, `old` or `new`: which export `out` holds, checked whole, and the manifest's entry for it."""
    path = out / ("tiny.pth" if export_format == "pth" else "tiny.saved_model")
    manifest = read_manifest(out / "tiny")  # the artifact itself is never touched: always whole
    entries = [e for e in manifest.get("exports", []) if e["file"] == path.name]
    if not path.exists():
        assert not entries
        return "none"
    digest = path_sha256(path)
    if export_format == "pth":
        assert set(torch.load(path, weights_only=True)) >= {"head.weight", "norm.weight"}  # a whole file
    else:
        assert (path / "saved_model.pb").is_file() and (path / "variables").is_dir()
    if previous is not None and digest == previous:
        return "old"
    assert not entries or entries[-1]["sha256"] == digest, "the manifest records another export"
    return "new"


@pytest.mark.parametrize("export_format", ["pth", "saved_model"])
def test_an_export_killed_at_any_point_leaves_the_old_or_the_new_export(servers, workdir, export_format):
    source = workdir / f"export-{export_format}-source"
    shutil.copytree(workdir / "seed0", source, symlinks=True)
    previous_path = source / ("tiny.pth" if export_format == "pth" else "tiny.saved_model")
    if export_format == "saved_model":  # an export to replace: the case where a directory is switched
        _run(servers, _export(source, export_format), workdir)
        # Marked, so that the old export differs from the new one even where the writer is deterministic.
        (previous_path / "assets.extra").mkdir(exist_ok=True)
        (previous_path / "assets.extra" / "previous").write_text("the export to replace\n")
        entry = read_manifest(source / "tiny")["exports"][-1]
        record_export(source / "tiny.json", entry["file"], {**entry, "sha256": path_sha256(previous_path)})
    previous = path_sha256(previous_path) if previous_path.exists() else None

    def check(out):
        state = _export_state(out, export_format, previous)
        remove_stale(out)
        hidden = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
        assert all(name.startswith((".tiny.current", ".tiny.w", ".tiny.saved_model.w")) for name in hidden), hidden
        return state

    results = _sweep(servers, workdir, f"export-{export_format}", lambda out: _export(out, export_format),
                     _copy(source), check)
    assert {held for _, held in results} == ({"old", "new"} if previous else {"none", "new"})


def test_sha256sums_is_written_whole(tmp_path, monkeypatch):
    """SHA256SUMS goes through the same staged write and rename as an export's file (checked in process:
    `--all` on synthetic checkpoints means full-size models)."""
    from converter.release import Outcome, write_sha256sums

    (tmp_path / "SHA256SUMS").write_text("old\n")
    renames = []

    def failing_rename(source, target):
        renames.append((Path(source).name, Path(target).name))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_rename)
    with pytest.raises(OutputError, match="cannot write .*SHA256SUMS: No space left on device"):
        write_sha256sums(tmp_path, [Outcome("good", sha256="ab" * 32)])
    assert renames and renames[0][1] == "SHA256SUMS" and renames[0][0].startswith(".SHA256SUMS.w")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SHA256SUMS"]  # the old file, nothing staged left
    assert (tmp_path / "SHA256SUMS").read_text() == "old\n"
    monkeypatch.undo()
    write_sha256sums(tmp_path, [Outcome("good", sha256="ab" * 32)])
    assert (tmp_path / "SHA256SUMS").read_text() == f"{'ab' * 32}  good.weights.h5\n"
