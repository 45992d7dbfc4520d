"""Killing a CLI run at one chosen syscall with strace's fault injection, and finding the syscalls to choose.

The runs come from a `CliServer` (tests/kill_server.py): each is a child forked after the imports,
which strace attaches to before the CLI's first line. `trace` runs the CLI once under strace and lists
the main thread's calls that touch a directory; `kill_at` runs it again with
`-e inject=NAME:signal=KILL:when=N`, N being the call's ordinal among the main thread's calls of that
name (strace counts per thread, from the attach), and checks that the kill landed there.
"""

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# What changes a directory: the writes into its files and every call that adds, renames or removes a name.
SYSCALLS = ("write", "pwrite64", "rename", "renameat", "renameat2", "unlink", "unlinkat", "symlink",
            "symlinkat", "mkdir", "mkdirat", "rmdir", "link", "linkat")
WRITES = ("write", "pwrite64")
# strace pads the pid column to a width (`2066  execve(`), so pids of fewer digits get more spaces.
LINE = re.compile(r"(?P<pid>\d+) +(?P<name>[a-z0-9_]+)\((?P<args>.*)")
STRACE = shutil.which("strace")


@dataclass(frozen=True)
class Call:
    name: str
    ordinal: int  # among the main thread's calls of this name, from 1
    args: str  # as strace prints them (-y), the directory as OUT and staging names as .w*
    # The hidden staged entry that the call only works inside of, or None when it touches a name a
    # reader can reach (a final name, a link, `.NAME.current`): see `kill_points`.
    inside: str | None = None

    def describe(self) -> str:
        return f"{self.name}#{self.ordinal}({self.args[:140]})"


FAILED = re.compile(r"\) = -1 E[A-Z]+ \(")
STAGED = re.compile(r"\.[^/\"<>]+\.w(\d+)-[0-9a-f]{8}")
PATH = re.compile(r"(?:<|\")([^<>\"]*)")


def _inside(name, args, directory, pid):
    """The staged entry (first name under `directory`) the call works inside of, if it touches only that.

    Entries of this process are being written; those of another (dead) process's version are being
    removed after a switch. Neither is reachable through a final name until it is switched in.
    """
    entries = set()
    for path in PATH.findall(args):
        if path.startswith(str(directory) + "/"):
            entries.add(path[len(str(directory)) + 1:].split("/")[0])
        elif path == str(directory):
            return None
    if len(entries) != 1:
        return None
    (entry,) = entries
    staged = STAGED.fullmatch(entry)
    return entry if staged and (staged[1] == pid or name in ("unlinkat", "unlink", "rmdir")) else None


class CliServer:
    """tests/kill_server.py in its own process: CLI runs as forked children, each traced from its first line.

    One run at a time; a sweep keeps one server per run it makes side by side.
    """

    def __init__(self):
        # No Python bytecode written (it would add writes), quiet TensorFlow: the server's runs inherit both.
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        self._process = subprocess.Popen([sys.executable, "-m", "tests.kill_server"], cwd=Path(__file__).parents[1],
                                         env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _answer(self, field):
        line = self._process.stdout.readline()
        assert line, f"tests/kill_server.py ended (exit {self._process.poll()}): its stderr is the test's"
        return json.loads(line)[field]

    def run(self, argv: list[str], cwd: Path, strace_options: tuple[str, ...] = ()) -> tuple[int, int]:
        """Runs `convert.py ARGV` in `cwd` (output in cwd/run.out), under strace with these options if any.

        Returns the run's pid and its return code (negative: the signal that ended it).
        """
        request = {"argv": argv, "cwd": str(cwd), "output": str(Path(cwd) / "run.out")}
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        pid = self._answer("pid")
        tracer = None
        if strace_options:
            # Not --seccomp-bpf: with it, strace 6.1 misses the injection after the traced process forks.
            tracer = subprocess.Popen([STRACE, "-f", "-qq", "-y", *strace_options, "-p", str(pid)])
            _wait_for_tracer(pid, tracer)
        os.kill(pid, signal.SIGCONT)
        returncode = self._answer("returncode")
        if tracer:
            tracer.wait(timeout=60)
        return pid, returncode

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait(timeout=60)


class ServerPool:
    """`size` CLI servers, started side by side; `borrow` hands out a free one for one run."""

    def __init__(self, size: int):
        with ThreadPoolExecutor(size) as pool:
            self._servers = list(pool.map(lambda _: CliServer(), range(size)))
        self._free = queue.Queue()
        for server in self._servers:
            self._free.put(server)

    @contextmanager
    def borrow(self) -> Iterator[CliServer]:
        server = self._free.get()
        try:
            yield server
        finally:
            self._free.put(server)

    def close(self) -> None:
        for server in self._servers:
            server.close()


def _wait_for_tracer(pid, tracer, timeout=60.0):
    deadline = time.monotonic() + timeout
    while "TracerPid:\t0\n" in Path(f"/proc/{pid}/status").read_text():
        assert tracer.poll() is None, f"strace could not attach to {pid} (exit {tracer.returncode})"
        assert time.monotonic() < deadline, f"strace did not attach to {pid} in {timeout} s"
        time.sleep(0.01)


def _normalized(args, directory):
    """Arguments comparable between runs: the directory, writers' pids and nonces, and fd numbers vary."""
    args = args.replace(str(directory), "OUT")
    args = re.sub(r"\.w\d+-[0-9a-f]{8}", ".w*", args)
    # TensorFlow's own staging names inside a SavedModel directory.
    args = re.sub(r"tempstate\d+", "tempstate*", args)
    args = re.sub(r"\.tmp[0-9a-f]{32}", ".tmp*", args)
    return re.sub(r"\b\d+<", "<", args)


def _main_thread_calls(log, directory, names, main_pid):
    lines = [m for m in map(LINE.match, Path(log).read_text().splitlines()) if m]
    assert any(line["pid"] == main_pid for line in lines), (
        f"no line of pid {main_pid} in {log}: strace's output format is not the one this parser reads")
    counts, calls = {}, []
    for line in lines:
        if line["pid"] != main_pid or line["name"] not in names:
            continue
        counts[line["name"]] = counts.get(line["name"], 0) + 1
        if str(directory) in line["args"]:
            calls.append(Call(line["name"], counts[line["name"]], _normalized(line["args"], directory),
                              _inside(line["name"], line["args"], directory, main_pid)))
    return calls


def trace(server: CliServer, argv: list[str], directory: Path, cwd: Path) -> list[Call]:
    """The main thread's calls of `SYSCALLS` whose arguments name a path in `directory`, in order."""
    log = Path(cwd) / "strace.log"
    pid, returncode = server.run(argv, cwd, ("-o", str(log), "-e", "trace=" + ",".join(SYSCALLS)))
    assert returncode == 0, (Path(cwd) / "run.out").read_text()[-3000:]
    return _main_thread_calls(log, directory, SYSCALLS, str(pid))


def kill_points(calls: list[Call], every_write: bool = False) -> list[Call]:
    """The calls to kill at: every one that touches a name a reader can reach (and succeeds).

    Calls inside one hidden staged entry (writing a new file or directory; removing a replaced
    version) leave the directory in states that differ only in how much of that unreachable entry
    exists, so the entry's first and last call stand for the rest, unless `every_write`
    (CVT_KILL_EVERY_WRITE=1, `make crash-sweep`).
    """
    chosen, by_entry = [], {}
    for call in calls:
        if FAILED.search(call.args):  # changed nothing (mkdir of an existing directory): the next call's state
            continue
        if call.inside and not every_write:
            by_entry.setdefault(call.inside, []).append(call)
        else:
            chosen.append(call)
    for group in by_entry.values():
        chosen += list(dict.fromkeys([group[0], group[-1]]))
    return sorted(chosen, key=calls.index)


def kill_at(server: CliServer, argv: list[str], call: Call, directory: Path, cwd: Path) -> None:
    """Runs `convert.py ARGV` (writing into `directory`) and kills it with SIGKILL on entering `call`.

    Checks that the kill landed on that call: strace counts per thread, so another thread's calls of
    the same name could otherwise take the count.
    """
    log = Path(cwd) / f"kill-{call.name}-{call.ordinal}.log"
    inject = f"inject={call.name}:signal=KILL:when={call.ordinal}"
    pid, returncode = server.run(argv, cwd, ("-o", str(log), "-e", f"trace={call.name}", "-e", inject))
    assert returncode == -signal.SIGKILL, (call.describe(), returncode, (Path(cwd) / "run.out").read_text()[-2000:])
    calls = _main_thread_calls(log, directory, (call.name,), str(pid))
    assert calls and calls[-1].ordinal == call.ordinal, (call.describe(), calls[-1:])
    assert _target(calls[-1]) == _target(call), (call.describe(), calls[-1].describe())


def _target(call):
    """What a call acts on: a write's file (its bytes vary, e.g. the manifest's run time), else its arguments."""
    if call.name in WRITES:
        return call.args.split(">")[0]
    return re.sub(r"(\) = .*| <unfinished \.\.\.>)$", "", call.args)
