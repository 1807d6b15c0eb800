# Quick start: `make report` runs the main job, `make test` runs the tests.
# Both create .venv (from python3, or PYTHON=...) and install the package into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: report check test lint calibrate clean mutants

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

clean:
	rm -rf $(VENV) .asv .benchmarks .pytest_cache .hypothesis
