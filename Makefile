# pgcarry: `make demo` and `make test` work on a fresh Debian 12 machine; each installs what it needs.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: setup system-deps venv kafka test demo bench clean

setup: system-deps venv

system-deps:
	@bash scripts/install-system-deps.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

kafka:
	@bash scripts/fetch-kafka.sh

test: setup kafka
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/pgcarry demo

bench: setup
	$(PY) bench/capture.py
	$(PY) bench/replay.py
	$(PY) bench/log_size.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
