# Set-up and checks. `make test` is the one command that installs everything and runs the
# tests (CI runs it through .ci/run); `make demo` installs and runs `df2am demo`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= runs/demo

.PHONY: install browser test lint demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,deploy,web]'
	touch $@

# Debian's Chromium and ChromeDriver for the web app's browser test (tests/web); apt only when
# they are missing (sudo when not root). Where apt cannot install them this warns and goes on,
# and the browser test skips saying why; everywhere else it runs.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null || \
	  { $$SUDO apt-get update -q >/dev/null && \
	    $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null; } || \
	  echo "warning: could not install chromium/chromium-driver with apt-get;" \
	       "the browser test (tests/web/test_browser.py) will be skipped"; }

lint: install
	$(BIN)/ruff check src tests benchmarks

test: install browser lint
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/df2am demo --out $(DEMO_OUT)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
