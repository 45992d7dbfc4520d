"""`python -m convert_cli`: the same CLI as `python convert.py` and the `cvt-convert` command."""

from convert_cli.app import run

run()
