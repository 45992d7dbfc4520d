# Everything a fresh machine needs: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: env demo test test-fast lint clean release bench bench-quick

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU-runnable torch pair on local disk; timm needs torchvision, which needs this torch.
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	# triton comes with that torch build; CPU work never uses it, and importing it after
	# TensorFlow kills the process (see tests/test_import_order.py).
	$(BIN)/pip uninstall --quiet -y triton
	touch $(STAMP)

env: $(STAMP)

demo: env
	$(BIN)/python convert.py --config cvt-21 --res 384 --synthetic

test: env
	$(BIN)/python -m pytest -q

test-fast: env
	$(BIN)/python -m pytest -q -m "not slow"

lint: env
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) artifacts .pytest_cache

# Every official checkpoint found in checkpoints/ -> artifacts/, summary table, artifacts/SHA256SUMS.
# `make release RELEASE_FLAGS=--synthetic` does all seven on synthetic checkpoints.
release: env
	$(BIN)/python convert.py --all $(RELEASE_FLAGS)

# Speed vs the official PyTorch model, each system in its own process (~25 min on 2 idle cores).
bench: env
	$(BIN)/python -m bench.run

bench-quick: env
	$(BIN)/python -m bench.run --quick --out bench/quick
