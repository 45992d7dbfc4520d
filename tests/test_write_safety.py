"""Writes never leave a broken artifact: full disks, file size limits, SIGKILL and Ctrl-C mid-write, bugs.

The signal lands mid-write reliably: tests/hooks/sitecustomize.py stops h5py for good after 60 of
the ~170 datasets, flushed to the temporary file, and tells the test, which then sends the signal.
"""

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from convert_cli.app import run
from cvt_spec.artifacts import file_sha256, read_manifest
from cvt_spec.atomic import remove_stale
from tests.conftest import REPO, run_cli, tiny_spec, visible_names
from tests.corpus import NUM_CLASSES, assert_refused, hooks_env, record, run_cli_with_file_size_limit, write_spec

# Large enough that the write is a real one (about 18 MB); small enough to build in seconds.
MEDIUM_SPEC = tiny_spec(DIM_EMBED=[64, 192, 384], NUM_HEADS=[1, 3, 6], DEPTH=[1, 2, 2])


def _tiny_args(tmp_path, out):
    return ["--spec", write_spec(tmp_path), "--num-classes", NUM_CLASSES, "--res", 64, "--synthetic",
            "--out", out, "--name", "tiny"]


def test_file_size_limit_is_one_line_after_tensorflow_and_leaves_nothing(tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse writes past 20 kB (EFBIG), as a full disk refuses with ENOSPC."""
    out = tmp_path / "fresh" / "out"
    result = run_cli_with_file_size_limit(20_000, *_tiny_args(tmp_path, out))
    assert_refused("file_size_limit", result, 2, [
        f"cannot write {out / 'tiny.weights.h5'}: File too large: needs about",
        "the file size limit (ulimit -f) is 20.0 kB",
    ], tmp_path / "fresh")
    assert "parity PASSED" in result.stdout  # the failure came after TensorFlow had run


def _run_in_process(args, capfd):
    """(exit code, captured output) of the CLI's `run` in this process."""
    try:
        run([str(a) for a in args])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    return code, capfd.readouterr()


def test_full_disk_is_refused_before_writing(tmp_path, monkeypatch, capfd):
    real_statvfs = os.statvfs

    def nearly_full(path):
        info = real_statvfs(path)
        return os.statvfs_result((info.f_bsize, info.f_frsize, info.f_blocks, 1, 1, *tuple(info)[5:]))

    monkeypatch.setattr(os, "statvfs", nearly_full)
    out = tmp_path / "out"
    code, captured = _run_in_process(_tiny_args(tmp_path, out), capfd)
    lines = captured.err.splitlines()
    assert code == 2 and len(lines) == 1, captured.err
    assert f"cannot write {out / 'tiny.weights.h5'}: No space left on device: needs about" in lines[0]
    assert not out.exists()
    record("disk_full (statvfs, in-process)", code, lines[0])


def test_a_write_failing_midway_keeps_the_previous_artifact(tmp_path, monkeypatch, capfd):
    """fsync can report ENOSPC (delayed allocation); here it fails on the manifest, after the weights."""
    out = tmp_path / "out"
    assert _run_in_process(_tiny_args(tmp_path, out), capfd)[0] == 0
    before = {name: file_sha256(out / name) for name in visible_names(out)}
    real_fsync, calls = os.fsync, []

    def fsync_then_full(fd):
        calls.append(fd)
        if len(calls) == 2:  # the weights were synced; the manifest is not
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_then_full)
    code, captured = _run_in_process([*_tiny_args(tmp_path, out), "--seed", 1], capfd)
    assert code == 2
    assert captured.err.splitlines() == [f"error: cannot write {out / 'tiny.json'}: No space left on device"]
    record("fsync_enospc_mid_write (in-process)", code, captured.err.strip())
    assert {name: file_sha256(out / name) for name in visible_names(out)} == before


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        names = [f".a.w{dead.pid}-0123abcd", f".a.json.w{dead.pid}-89abcdef", f".a.tflite.w{dead.pid}-00000000",
                 f".b.w{alive.pid}-0123abcd", f".c.w{dead.pid}-fedcba98", "a.weights.h5", ".a.wX-0123abcd",
                 ".a.w12-short", "notes.txt"]
        for name in names:
            (tmp_path / name).write_text("x")
        (tmp_path / f".a.sm.w{dead.pid}-11111111").mkdir()  # a killed export's SavedModel directory
        (tmp_path / f".a.sm.w{dead.pid}-11111111" / "saved_model.pb").write_text("x")
        (tmp_path / ".c.current").symlink_to(f".c.w{dead.pid}-fedcba98")  # an artifact's current version
        stale = [*names[:3], f".a.sm.w{dead.pid}-11111111"]
        assert sorted(remove_stale(tmp_path)) == sorted(stale)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names[3:], ".c.current"])
    finally:
        alive.kill()
        alive.wait()


def _medium_args(tmp_path, out, seed):
    spec = write_spec(tmp_path, MEDIUM_SPEC, "medium.json")
    return ["--spec", spec, "--num-classes", 1000, "--res", 64, "--synthetic", "--no-parity", "--seed", seed,
            "--out", out, "--name", "medium"]


def _signal_mid_write(tmp_path, out, seed, signum):
    """Starts a conversion and sends `signum` while its weights file is half written.

    Returns (the weights file being written, the writer's exit code, its stderr).
    """
    ready = tmp_path / f"ready{seed}-{signum}"
    env = hooks_env(CVT_TEST_PAUSE_WRITE=str(ready), CVT_TEST_PAUSE_AFTER="60")
    # A shell ignores SIGINT in the jobs it starts in the background (as CI may run us), and children
    # inherit that: give the writer the default disposition, as a terminal would.
    writer = subprocess.Popen([sys.executable, str(REPO / "convert.py"), *map(str, _medium_args(tmp_path, out, seed))],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 600
        while not ready.exists():
            assert writer.poll() is None, f"writer exited with {writer.returncode}: {writer.stderr.read()}"
            assert time.monotonic() < deadline, "writer never started writing"
            time.sleep(0.05)
        temp = Path(ready.read_text())  # in the writer's hidden version directory, not yet switched in
        assert temp.parent.parent == out and temp.name == "medium.weights.h5" and temp.stat().st_size > 0
        assert re.fullmatch(rf"\.medium\.w{writer.pid}-[0-9a-f]{{8}}", temp.parent.name), temp
        writer.send_signal(signum)
        _, stderr = writer.communicate(timeout=120)
    finally:
        if writer.poll() is None:
            writer.kill()
    return temp, writer.returncode, stderr


def _listing(out):
    return sorted(p.name for p in out.iterdir())


def test_killed_mid_write_leaves_the_previous_artifact_or_none(tmp_path):
    out = tmp_path / "out"

    # SIGKILL with no previous artifact: none, only the dead writer's hidden version directory.
    first_temp, code, _ = _signal_mid_write(tmp_path, out, 0, signal.SIGKILL)
    assert code == -signal.SIGKILL and _listing(out) == [first_temp.parent.name]

    # The next successful run removes it and writes a complete artifact.
    assert run_cli(*_medium_args(tmp_path, out, 0)).returncode == 0
    assert visible_names(out) == ["medium.json", "medium.weights.h5"]  # and nothing else hidden
    current = os.readlink(out / ".medium.current")
    previous = read_manifest(out / "medium.weights.h5")  # checks the sha256 too
    assert previous["artifact"]["size"] > 15_000_000 and previous["source"]["seed"] == 0

    # SIGKILL while overwriting it: the previous artifact is intact, byte for byte.
    temp, code, _ = _signal_mid_write(tmp_path, out, 1, signal.SIGKILL)
    assert code == -signal.SIGKILL and temp.stat().st_size < previous["artifact"]["size"]
    assert read_manifest(out / "medium.weights.h5") == previous
    assert _listing(out) == sorted([".medium.current", current, "medium.json", "medium.weights.h5", temp.parent.name])

    # Ctrl-C (SIGINT) mid-write: one line, exit 130, the previous artifact intact, and no temporary
    # file at all: the interrupted writer removed its own, and the dead writer's on starting.
    _, code, stderr = _signal_mid_write(tmp_path, out, 2, signal.SIGINT)
    assert code == 130 and stderr.splitlines() == ["error: interrupted"]
    assert read_manifest(out / "medium.weights.h5") == previous
    assert visible_names(out) == ["medium.json", "medium.weights.h5"]
    assert os.readlink(out / ".medium.current") == current
    record("sigint_mid_write", code, stderr.strip())


def test_a_bug_after_tensorflow_loads_is_still_one_line(tmp_path):
    out = tmp_path / "out"
    result = run_cli(*_tiny_args(tmp_path, out), env=hooks_env(CVT_TEST_BUG="1"))
    assert_refused("internal_bug", result, 3, [
        "error: internal error (KeyError: 'injected bug'); rerun with --debug for the traceback",
    ], out)
    assert "parity PASSED" in result.stdout

    debug = run_cli(*_tiny_args(tmp_path, out), "--debug", env=hooks_env(CVT_TEST_BUG="1"))
    assert debug.returncode == 3, debug.stderr
    assert "Traceback (most recent call last)" in debug.stderr and "KeyError: 'injected bug'" in debug.stderr
    assert debug.stderr.splitlines()[-1].startswith("error: internal error (KeyError")
    # TensorFlow does write native log lines to stderr: what the quiet mode above kept out.
    assert "absl::InitializeLog" in debug.stderr or "oneDNN" in debug.stderr
    assert not out.exists()
