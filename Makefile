# The two commands of the README: `make demo` and `make test`. Both create .venv when it is missing.
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: demo test sync readme

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install when the package's requirements change.
$(VENV)/.installed: $(BIN)/python setup.py settings.ini
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/walkopt-demo

# Fails if nbdev_export / nbdev_clean would change anything, then runs every test (the notebooks included).
test: $(VENV)/.installed
	bash tools/check_synced.sh $(BIN)
	$(BIN)/python -m pytest

# Export the library from the notebooks, clean them, and render README.md from nbs/index.ipynb.
sync: $(VENV)/.installed
	$(BIN)/nbdev_clean && $(BIN)/nbdev_export && $(BIN)/python tools/readme.py
