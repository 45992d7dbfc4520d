"""Every parser of outside bytes on mutated seed files: the project's own InputError or a result, nothing else.

Mutations are drawn by hypothesis with a fixed seed and a bounded number of inputs per seed file;
`make fuzz` runs the same targets at length, coverage-guided (atheris). Inputs that once escaped as
another exception are kept below as corpus cases.
"""

import re
import resource
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converter.checkpoint import CheckpointError, load_checkpoint
from tests.fuzz_targets import TARGETS

EXAMPLES_PER_SEED = 100
# A mutated header may ask for a huge allocation: let it fail here (MemoryError) rather than take the machine.
FUZZ_ADDRESS_SPACE = 12 << 30

MUTATIONS = st.lists(
    st.tuples(st.sampled_from(["flip", "set", "delete", "insert", "truncate", "repeat"]),
              st.floats(0, 1, exclude_max=True), st.integers(0, 255), st.integers(1, 64)),
    min_size=1, max_size=6,
)


def mutate(data: bytes, mutations) -> bytes:
    """`data` changed by (kind, where as a fraction, byte, length) mutations, applied in turn."""
    data = bytearray(data)
    for kind, where, byte, length in mutations:
        at = int(where * max(len(data), 1))
        if kind == "flip" and data:
            data[min(at, len(data) - 1)] ^= 1 << (byte % 8)
        elif kind == "set" and data:
            data[min(at, len(data) - 1)] = byte
        elif kind == "delete":
            del data[at:at + length]
        elif kind == "insert":
            data[at:at] = bytes([byte]) * length
        elif kind == "truncate":
            del data[at:]
        elif kind == "repeat":
            data[at:at] = data[at:at + length]
    return bytes(data)


@pytest.fixture
def bounded_memory():
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (FUZZ_ADDRESS_SPACE, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


CASES = [(target, name) for target, (_, seeds) in TARGETS.items() for name in seeds()]


@pytest.mark.parametrize(("target", "seed_name"), CASES, ids=[f"{t}-{n}" for t, n in CASES])
def test_mutated_inputs_give_an_input_error_or_a_result(target, seed_name, bounded_memory):
    run, seeds = TARGETS[target]
    seed = seeds()[seed_name]
    run(seed, seed_name)  # the seed itself is accepted

    @settings(max_examples=EXAMPLES_PER_SEED, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(MUTATIONS)
    def fuzz(mutations):
        run(mutate(seed, mutations), seed_name)

    fuzz()


FINDINGS = Path(__file__).parent / "data" / "fuzz_findings"


@pytest.mark.parametrize("finding", sorted(p.name for p in FINDINGS.iterdir()))
def test_what_the_fuzzer_found_is_one_checkpoint_error(finding, tmp_path):
    """Files on which torch.load, safetensors or zipfile raised something else than the loader expected
    (named `<where>-<exception>.bin`): now each is one CheckpointError naming the file."""
    path = tmp_path / ("model.safetensors" if "Safetensor" in finding else "checkpoint.pth")
    path.write_bytes((FINDINGS / finding).read_bytes())
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: (not a readable torch checkpoint|"
                                              r"a damaged zip archive|not a safe torch checkpoint)"):
        load_checkpoint(path)
