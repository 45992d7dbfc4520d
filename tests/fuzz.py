"""`make fuzz`: the parser fuzz targets at length, coverage-guided by atheris (libFuzzer), from the seed files.

    python -m tests.fuzz checkpoint|spec|image [--seconds N] [--out DIR]

Writes the seed corpus to DIR/<target>/corpus, runs until N seconds pass, and keeps every input that
raised anything but the project's InputError in DIR/<target>/ (libFuzzer's crash-* files), to become
a corpus case in tests/test_fuzz.py. Prints the inputs run and the findings.
"""

import argparse
import os
import sys
from pathlib import Path

import atheris
import torch  # noqa: F401  (imported first, not instrumented: its own Python code is not what is fuzzed)

with atheris.instrument_imports(include=["converter", "cvt_spec", "cvt_tf", "yaml", "PIL"]):
    import torch._weights_only_unpickler  # noqa: F401  (re-instrumented below: the unpickler is fuzzed)

    from tests.fuzz_targets import TARGETS

atheris.instrument_func(torch._weights_only_unpickler.Unpickler.load)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--seconds", type=int, default=600, help="how long to fuzz (default 600)")
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings"), help="corpus and findings directory")
    args = parser.parse_args(argv)
    run, seeds = TARGETS[args.target]
    corpus = args.out / args.target / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for name, data in seeds().items():
        (corpus / name).write_bytes(data)

    def one_input(data: bytes) -> None:
        run(data)

    os.chdir(args.out / args.target)  # libFuzzer writes crash-* files into the working directory
    atheris.Setup([sys.argv[0], f"-max_total_time={args.seconds}", "-rss_limit_mb=12000", "-print_final_stats=1",
                   str(corpus.resolve())], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
