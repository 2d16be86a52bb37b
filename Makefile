# Two entry points for a fresh machine: `make demo` and `make test`.
# Everything they need (virtualenv, Python packages, Kafka broker jars) is installed
# on first use and cached; later runs reuse it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: install test demo clean

install: $(STAMP)
	$(BIN)/loyalty kafka install

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy loyalty
	$(BIN)/pytest
	$(BIN)/loyalty bench --quick --out .local/bench-quick.json

demo: install
	$(BIN)/loyalty demo

clean:
	rm -rf $(VENV) .local
