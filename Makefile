# Every target sets up what it needs on a fresh Debian machine (python3, node/npm, apt, root).
SHELL := /bin/bash
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV_STAMP := .venv/.installed
PYTEST_ARGS ?=

.PHONY: install test-deps demo test lint bench bench-quick release-wheels release-blobs \
  release-compile-check clean

$(UV):
	@command -v uv >/dev/null 2>&1 && { mkdir -p $(TOOLS)/bin && ln -sf "$$(command -v uv)" $(UV); } \
	  || { python3 -m venv $(TOOLS) && $(TOOLS)/bin/pip install --quiet 'uv>=0.5'; }

$(VENV_STAMP): $(UV) uv.lock pyproject.toml */pyproject.toml
	$(UV) sync --all-packages --frozen --quiet --compile-bytecode
	.venv/bin/python -m compileall -q core/src plugins/src plugins_*/src >/dev/null
	@touch $@

install: $(VENV_STAMP)

test-deps: install
	bash .ci/install-test-deps

demo: install
	bash examples/demo.sh

test: test-deps
	$(UV) run --frozen pytest $(PYTEST_ARGS)
	bash examples/plugin-example/ci.sh
	$(MAKE) --no-print-directory lint

lint: install
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen ruff check .
	$(UV) run --frozen mypy core/src plugins/src plugins_s3/src plugins_azure/src plugins_gcs/src plugins_scp/src plugins_apprise/src
	$(UV) run --frozen mypy --strict core/src/service_backup/destination.py core/src/service_backup/config.py core/src/service_backup/errors.py core/src/service_backup/hookspecs.py core/src/service_backup/source.py core/src/service_backup/tls.py core/src/service_backup/raw_read.py core/src/service_backup/testing

bench: test-deps
	$(UV) run --frozen python -m bench

bench-quick: test-deps
	$(UV) run --frozen python -m bench --quick

release-wheels: $(UV)
	UV=$(UV) bash bosh/scripts/release-wheels

# PYTHON_TARBALL=... LIBFFI_TARBALL=... make release-blobs (see docs/bosh.md)
release-blobs: $(UV)
	UV=$(UV) bash bosh/scripts/add-blobs

# Compiles service-backup_python for real and runs the release's checks on it (slow: not in
# `make test`). PYTHON_TARBALL=... LIBFFI_TARBALL=..., or FETCH=1 (apt-get source); WORK=folder.
release-compile-check: test-deps
	UV=$(UV) bash bosh/scripts/compile-check \
	  $(if $(FETCH),--fetch,--python-tarball "$(PYTHON_TARBALL)" --libffi-tarball "$(LIBFFI_TARBALL)") \
	  $(if $(WORK),--work "$(WORK)")

clean:
	rm -rf .venv $(TOOLS) node_modules
