# The two commands of the README: `make demo` and `make test`. Both create .venv when it is missing.
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: demo test test-range sync bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install when the package's requirements change.
$(VENV)/.installed: $(BIN)/python setup.py settings.ini constraints-dev.txt
	$(BIN)/python -m pip install -q -e ".[dev]" -c constraints-dev.txt
	touch $@

# The comparison on MNIST-1D: the walk vs lr_find + fit_one_cycle, fit_one_cycle and fit (about 1 minute on 2 cores, once installed).
demo: $(VENV)/.installed
	$(BIN)/walkopt-compare --epochs 10 --lrs 1e-5,1e-4,1e-3,1e-2,1e-1 --out runs/demo

# Fails if nbdev_export / nbdev_clean would change anything, then runs every test (the notebooks included).
test: $(VENV)/.installed
	bash tools/check_synced.sh $(BIN)
	$(BIN)/python -m pytest

# The other end of the supported range from `make test`'s toolchain (fastai 2.8.7 and fastcore 1.x, the oldest
# supported, with the newest torch): the newest fastai 2.8 and fastcore 2.x with torch 2.13, in their own venv. The
# library's tests only: the notebooks need the nbdev toolchain, which needs fastcore 1.x.
RANGE := .venv-range
$(RANGE)/.installed: setup.py settings.ini
	$(PYTHON) -m venv $(RANGE)
	$(RANGE)/bin/python -m pip install -q -e ".[distributed]" "fastai>=2.8.12,<2.9" "torch==2.13.*" pytest setuptools
	touch $@

test-range: $(RANGE)/.installed
	$(RANGE)/bin/python -m pytest --ignore=tests/test_notebooks.py

# Export the library from the notebooks, clean them, and render README.md from nbs/index.ipynb.
sync: $(VENV)/.installed
	$(BIN)/nbdev_clean && $(BIN)/nbdev_export && $(BIN)/python tools/readme.py

# What the walk costs over plain training: median ratios of epoch time and peak GPU memory (small sizes on a CPU).
bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench.py
