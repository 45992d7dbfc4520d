"""tests/kill.py reads strace's log whatever the width of the pids in it (CI's pids wrap past 32768)."""

from tests.kill import _main_thread_calls


def test_the_log_is_read_with_short_and_long_pids(tmp_path):
    out = tmp_path / "out"
    log = tmp_path / "strace.log"
    log.write_text(
        '2066  execve("/venv/bin/python", ["python", "convert.py"], 0x7ffd /* 45 vars */) = 0\n'
        '2068  execve("/sbin/ldconfig", ["/sbin/ldconfig", "-p"], 0x7f73 /* 2 vars */) = 0\n'
        f'2066  rename("{out}/.tiny.w2066-0123abcd", "{out}/tiny.pth") = 0\n'
        f'2068  rename("{out}/a", "{out}/b") = 0\n'
        f'2066  rename("{out}/.tiny.w2066-89abcdef", "{out}/tiny.pth") = 0\n'
        f'32660 rename("{out}/c", "{out}/d") = 0\n'
    )
    calls = _main_thread_calls(log, out, ("rename",), "2066")
    assert [(call.ordinal, call.args) for call in calls] == [
        (1, '"OUT/.tiny.w*", "OUT/tiny.pth") = 0'), (2, '"OUT/.tiny.w*", "OUT/tiny.pth") = 0')]
