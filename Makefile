# The two commands of the README: `make demo` and `make test`. Both create .venv when it is missing.
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: demo test sync bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install when the package's requirements change.
$(VENV)/.installed: $(BIN)/python setup.py settings.ini constraints-dev.txt
	$(BIN)/python -m pip install -q -e ".[dev]" -c constraints-dev.txt
	touch $@

# The comparison on MNIST-1D: the walk vs lr_find + fit_one_cycle, fit_one_cycle and fit (about 2 minutes on 2 cores).
demo: $(VENV)/.installed
	$(BIN)/walkopt-compare --epochs 10 --lrs 1e-5,1e-4,1e-3,1e-2,1e-1 --out runs/demo

# Fails if nbdev_export / nbdev_clean would change anything, then runs every test (the notebooks included).
test: $(VENV)/.installed
	bash tools/check_synced.sh $(BIN)
	$(BIN)/python -m pytest

# Export the library from the notebooks, clean them, and render README.md from nbs/index.ipynb.
sync: $(VENV)/.installed
	$(BIN)/nbdev_clean && $(BIN)/nbdev_export && $(BIN)/python tools/readme.py

# What the walk costs over plain training: median ratios of epoch time and peak GPU memory (small sizes on a CPU).
bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench.py
