# Quick start: `make report` runs the main job, `make test` runs the tests.
# Both create .venv (from python3, or PYTHON=...) and install the package into it as a user
# does: the wheel built from this checkout, not an editable install, with the newest releases
# of its dependencies that pip picks today (torch pinned). A change to the package's files
# rebuilds and reinstalls the wheel; the dependencies already there are kept.
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
EXTRAS ?= dev,real,peers
PACKAGE_FILES := $(shell find kernels -type f -not -path '*/__pycache__/*' -not -path '*.egg-info/*' \
	-not -name '*.nb[ic]' -not -name BUILD_INFO.json)

.PHONY: report check test lint calibrate clean mutants gate-baseline gate wheel

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The wheel is built from a clean build/ (setuptools keeps deleted modules in a stale one).
$(BIN)/.installed: $(BIN)/python pyproject.toml $(PACKAGE_FILES)
	rm -rf build dist
	$(BIN)/python scripts/build_info.py > kernels/bert_embedding_kernels/BUILD_INFO.json
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist .
	$(BIN)/python -m pip install --quiet "$$(ls dist/*.whl)[$(EXTRAS)]"
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall dist/*.whl
	rm -rf build
	touch $@

wheel: $(BIN)/.installed

report: $(BIN)/.installed
	$(BIN)/embench report --out report

check: $(BIN)/.installed
	$(BIN)/embench check

# The suite runs from an empty directory outside the checkout, so that what it imports is the
# installed wheel (tests/test_install.py checks this when EXPECT_INSTALLED_WHEEL is set).
test: $(BIN)/.installed
	@here=$$(pwd); work=$$(mktemp -d); cd $$work && \
	EXPECT_INSTALLED_WHEEL=1 $(BIN)/python -m pytest --rootdir "$$here" -c "$$here/pyproject.toml" \
	    "$$here/tests" $(PYTEST_ARGS); status=$$?; rm -rf "$$work"; exit $$status

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Plant each bug of scripts/mutants_list.py in a temporary copy; every one must fail its tests.
mutants: $(BIN)/.installed
	$(BIN)/python scripts/mutants.py

# The shipped report and the cost model behind method="auto" (run on a quiet machine).
calibrate: $(BIN)/.installed
	$(BIN)/embench report --out docs/report
	cp docs/report/calibration.json kernels/bert_embedding_kernels/calibration.json

# The regression gate (docs/RESULTS.md): one point, BERT-base (batch 32 x seq 512, hidden
# 768, vocab 30522: a 48 MiB output, larger than the last-level cache), gather and fused,
# the two LayerNorm peers, each run normalised by its own copy roofline. `make
# gate-baseline` on main, then `make gate` on the change: fails if a contender got 20%
# slower (CI excluding 1); compare refuses the pair if the runs' shapes differ.
GATE = $(BIN)/embench report --quick --vocab-sizes none --seq-lens 512 --small-seq-lens none \
	--family-vocab-sizes none \
	--batch-size 32 --methods gather fused \
	--peers torch-eager-layernorm onnxruntime-embedlayernorm --budget 4

gate-baseline: $(BIN)/.installed
	$(GATE) --out .gate/base

gate: $(BIN)/.installed
	$(GATE) --out .gate/change
	$(BIN)/embench compare .gate/base/results.json .gate/change/results.json --fail-above 0.2

clean:
	rm -rf $(VENV) .asv .benchmarks .pytest_cache .hypothesis .gate build dist
