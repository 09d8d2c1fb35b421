# Every target installs what it needs first, so a fresh machine only needs `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all venv servers browser proto lint test cluster drill bench clean order-flow

all: test

$(STAMP): pyproject.toml proto/pyproject.toml worker/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ./proto -e ./worker -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The etcd server and etcdctl, and the Redis server, from Debian when they are missing.
servers:
	@command -v etcd >/dev/null && command -v etcdctl >/dev/null && command -v redis-server >/dev/null || { \
	  echo "installing etcd-server, etcd-client and redis-server from Debian"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server etcd-client redis-server; }

# Debian's chromium for the console tests (Playwright drives it; it never downloads a browser).
browser:
	@test -x /usr/bin/chromium || { \
	  echo "installing chromium from Debian (the browser of tests/test_console.py)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto --grpc_python_out=proto \
	    proto/orchestrator_api/v1/orchestrator.proto

# Static checks of the product packages: ruff, then mypy --strict (settings in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check orchestrator worker proto devtools tests bench examples
	$(PY) -m mypy orchestrator worker proto/orchestrator_api

test: lint $(STAMP) servers browser
	$(PY) -m pytest -q

# SECURE=1: mutual TLS on every port, with a throwaway CA made for the run (it prints how to use it).
cluster: $(STAMP) servers
	$(PY) -m devtools cluster --config deploy/local-cluster.yaml $(if $(SECURE),--secure)

# The order flow built both ways (examples/order_flow), side by side on a throwaway local cluster.
order-flow: $(STAMP) servers
	$(PY) -m examples.order_flow

drill: $(STAMP) servers
	$(PY) -m devtools drill --config deploy/local-cluster.yaml

# Benchmarks on a local three-node cluster vs Celery (~10 min); results in bench/results/.
# `make bench ARGS=--quick` is a ~2 min smoke run; `ARGS="--scenario throughput"` runs one scenario.
bench: $(STAMP) servers
	@$(PY) -c "import celery, pyinstrument" 2>/dev/null && test -x $(VENV)/bin/py-spy || $(PY) -m pip install -q -e ./proto -e ./worker -e '.[bench]'
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
