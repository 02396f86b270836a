# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv and install everything first (pinned by requirements.lock).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install demo test lint benchmark-generate clean-data

$(INSTALLED): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned in the lock: pip takes the CPU build that lies on this machine's disk
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev,benchmark]"
	touch $(INSTALLED)

install: $(INSTALLED)

demo: install
	$(BIN)/tradewind demo

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean-data:
	rm -rf data
