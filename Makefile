# The two commands a newcomer needs: `make serve` and `make test`. Both set up a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS ?= models
HOST ?= 127.0.0.1
PORT ?= 8000
SCENARIO ?= steady
DURATION ?= 600

.PHONY: serve test test-fast lint load bench soak demo-models system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[cpu,dev,load]'
	touch $(STAMP)

$(MODELS)/.built: $(STAMP)
	$(BIN)/batchserve demo-models $(MODELS)
	touch $@

demo-models: $(MODELS)/.built

# Prometheus and promtool for the monitoring tests (Debian's package; root or sudo on a fresh machine).
system-deps:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends prometheus; }
	@command -v kubectl >/dev/null || echo "kubectl not found: the kustomize render tests will skip"

serve: $(STAMP) $(MODELS)/.built
	$(BIN)/batchserve serve --model-repository $(MODELS) --host $(HOST) --port $(PORT)

test: $(STAMP) system-deps
	$(PY) -m pytest -q -ra

# The fast tier: tests/unit and the server in the test's own process (tests/inprocess), under a minute.
# No subprocess and no TensorFlow import: tests/fast_tier.py fails the run on either. `make test` runs these too.
test-fast: $(STAMP)
	$(PY) -m pytest -q -p tests.fast_tier tests/unit tests/inprocess

lint: $(STAMP)
	$(BIN)/ruff check batching server load_tests tests
	$(BIN)/mypy

load: $(STAMP) $(MODELS)/.built
	$(PY) -m load_tests.run $(SCENARIO)

bench: $(STAMP) $(MODELS)/.built
	$(BIN)/batchserve bench --model-repository $(MODELS)

# Mixed traffic for DURATION seconds; fails on sustained growth of memory, fds, threads or shared memory.
soak: $(STAMP) $(MODELS)/.built
	$(PY) -m load_tests.soak --model-repository $(MODELS) --duration $(DURATION)

clean:
	rm -rf $(VENV) $(MODELS) results .pytest_cache .mypy_cache .ruff_cache
