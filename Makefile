# Quick start: `make report` runs the main job, `make test` runs the tests.
# Both create .venv (from python3, or PYTHON=...) and install the package into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: report check test lint calibrate clean mutants gate-baseline gate

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,real,peers]'
	touch $@

report: $(BIN)/.installed
	$(BIN)/embench report --out report

check: $(BIN)/.installed
	$(BIN)/embench check

test: $(BIN)/.installed
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Plant each bug of scripts/mutants_list.py in a temporary copy; every one must fail its tests.
mutants: $(BIN)/.installed
	$(BIN)/python scripts/mutants.py

# The shipped report and the cost model behind method="auto" (run on a quiet machine).
calibrate: $(BIN)/.installed
	$(BIN)/embench report --out docs/report
	cp docs/report/calibration.json kernels/calibration.json

# The regression gate (docs/RESULTS.md): BERT-base, gather and fused, the LayerNorm peers,
# each run normalised by its own copy roofline. `make gate-baseline` on main, then
# `make gate` on the change: fails if a contender got 20% slower (CI excluding 1).
GATE = $(BIN)/embench report --quick --vocab-sizes 30522 --seq-lens 512 --small-seq-lens none \
	--batch-size 32 --methods gather fused --peers --budget 4

gate-baseline: $(BIN)/.installed
	$(GATE) --out .gate/base

gate: $(BIN)/.installed
	$(GATE) --out .gate/change
	$(BIN)/embench compare .gate/base/results.json .gate/change/results.json --fail-above 0.2

clean:
	rm -rf $(VENV) .asv .benchmarks .pytest_cache .hypothesis .gate
