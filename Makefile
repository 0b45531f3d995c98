# Set-up and checks. `make test` is the one command that installs everything and runs the
# tests (CI runs it through .ci/run); `make demo` installs and runs `df2am demo`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= runs/demo

.PHONY: install test lint demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,deploy]'
	touch $@

lint: install
	$(BIN)/ruff check src tests benchmarks

test: install lint
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/df2am demo --out $(DEMO_OUT)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
