# Everything a fresh machine needs: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: env demo test test-fast lint clean release bench bench-quick bench-evaluate fuzz crash-sweep

$(STAMP): pyproject.toml Makefile
	# strace (Debian) injects the kills of tests/test_kill_safety.py.
	command -v strace >/dev/null || (apt-get update -qq && apt-get install -y -qq strace)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU-runnable torch pair on local disk; timm needs torchvision, which needs this torch.
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[convert,dev,bench]'
	# keras-hub without tensorflow-text (and the full tensorflow wheel it asks for): its vision models
	# never import it. The rest of what it needs, named.
	$(BIN)/pip install --quiet --no-deps 'keras-hub>=0.32'
	$(BIN)/pip install --quiet absl-py regex rich 'kagglehub!=1.0.1' kagglesdk==0.1.28 sentencepiece tokenizers
	# triton comes with that torch build; CPU work never uses it, and importing it after
	# TensorFlow kills the process (see tests/test_import_order.py).
	$(BIN)/pip uninstall --quiet -y triton
	touch $(STAMP)

env: $(STAMP)

demo: env
	$(BIN)/python convert.py --config cvt-21 --res 384 --synthetic

# Two pytest-xdist workers, one test module each at a time (module fixtures are built once), in xdist's
# order: modules with the most tests first. Its time on a fresh clone: README, "Development".
TEST_WORKERS ?= 2
test: env
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: env
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

lint: env
	$(BIN)/ruff check .   # the rules selected in pyproject.toml: E, F, I, UP, B, SIM

clean:
	rm -rf $(VENV) artifacts .pytest_cache

# Every official checkpoint found in checkpoints/ -> artifacts/, summary table, artifacts/SHA256SUMS.
# `make release RELEASE_FLAGS=--synthetic` does all seven on synthetic checkpoints.
release: env
	$(BIN)/python convert.py --all $(RELEASE_FLAGS)

# Speed vs the official PyTorch model and the peer runtimes, each system in its own process (README, "Speed").
bench: env
	$(BIN)/python -m bench.run

bench-quick: env
	$(BIN)/python -m bench.run --quick --out bench/quick

# evaluate's images/s against the model alone (inference_function), alternated in one run; EVALUATE_FLAGS e.g.
# `--config cvt-21 --res 384 --batch 16`.
bench-evaluate: env
	OMP_NUM_THREADS=2 $(BIN)/python -m bench.evaluate $(EVALUATE_FLAGS)

# Every parser of outside bytes, coverage-guided (atheris), FUZZ_SECONDS each; findings in fuzz-findings/.
FUZZ_SECONDS ?= 600
fuzz: env
	for target in checkpoint spec image; do $(BIN)/python -m tests.fuzz $$target --seconds $(FUZZ_SECONDS) || exit 1; done

# tests/test_kill_safety.py with a kill at every single write too, not only at each file's first and last.
crash-sweep: env
	CVT_KILL_EVERY_WRITE=1 $(BIN)/python -m pytest -q tests/test_kill_safety.py
