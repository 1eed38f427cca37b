# Two entry points: `make run` starts the service, `make test` passes the tests.
# Both install what they need first (Python packages into .venv; Debian packages
# for Apertium, espeak-ng and Redis when apt is available and we are root).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEBIAN_PACKAGES := redis-server apertium apertium-eng-spa espeak-ng
# The browser test drives Debian's Chromium.
TEST_PACKAGES := chromium
# The CPU build of PyTorch that these machines keep on local disk; on a GPU
# machine pass TORCH=torch for PyPI's CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup system-packages test-packages debian-packages run test lint clean

setup: system-packages $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

system-packages:
	@$(MAKE) --no-print-directory debian-packages PACKAGES="$(DEBIAN_PACKAGES)"

test-packages:
	@$(MAKE) --no-print-directory debian-packages PACKAGES="$(TEST_PACKAGES)"

debian-packages:
	@missing=""; \
	for p in $(PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "missing Debian packages:$$missing (install them for every language)"; \
	fi

run: setup
	$(BIN)/tolk up

test: setup test-packages
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .tolk
