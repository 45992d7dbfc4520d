"""`python -m tests.kill_server`: the CLI's imports done once, then one forked child per CLI run asked for.

A tiny conversion takes 18 s, 17.7 of them importing torch, TensorFlow and Keras; under strace, which
stops at every syscall of those imports, a run took about three times that. The server imports them
once (no TensorFlow op has run, so no runtime threads exist to lose in a fork) and forks a child per
request, which stops itself so that strace can attach before the CLI starts (tests/kill.py).

Requests on stdin, one JSON line each: {"argv": [...], "cwd": "...", "output": "..."}. The server
answers on stdout with {"pid": N} once the child is stopped, and {"returncode": R} when it has ended
(negative: killed by that signal, as `subprocess` gives it).
"""

import importlib
import json
import os
import signal
import sys
import traceback

# What the runs import, in the entry points' order (torch before TensorFlow): conversion and export.
PRELOADED = ("torch", "tensorflow", "keras", "convert_cli.app", "converter.pipeline", "converter.export")


def _child(request: dict) -> None:
    """Runs the CLI as `python convert.py ARGV` would, from its first line, once continued."""
    os.chdir(request["cwd"])
    output = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    os.kill(os.getpid(), signal.SIGSTOP)
    sys.argv = ["convert.py", *request["argv"]]
    code = 0
    try:
        sys.modules["convert_cli.app"].run(request["argv"])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 3
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _answer(**fields) -> None:
    print(json.dumps(fields), flush=True)


def serve() -> None:
    for name in PRELOADED:
        importlib.import_module(name)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        os.waitpid(pid, os.WUNTRACED)
        _answer(pid=pid)
        _, status = os.waitpid(pid, 0)
        _answer(returncode=os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    serve()
