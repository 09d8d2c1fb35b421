# Every target installs what it needs first, so a fresh machine only needs `make test`.
PYTHON ?= python3
VENV   ?= .venv
TOOLS  ?= .tools
PY     := $(VENV)/bin/python
UV     := $(TOOLS)/bin/uv
STAMP  := $(VENV)/.installed

.PHONY: all venv servers browser proto lint test test-fast test-latest lock cluster drill bench clean order-flow

all: test

# uv itself, pinned by hash, in a venv of its own (`uv sync` keeps .venv exactly as the lock says).
$(UV): devtools/requirements-uv.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --require-hashes -r devtools/requirements-uv.txt
	touch $(UV)

# Exactly what uv.lock says, every extra included; --locked refuses a lock that pyproject.toml outgrew.
$(STAMP): uv.lock pyproject.toml proto/pyproject.toml worker/pyproject.toml | $(UV)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync -q --locked --all-extras --python $(PYTHON)
	touch $(STAMP)

venv: $(STAMP)

# After editing a range in a pyproject.toml: `make lock` (keeps every other pin);
# `make lock UPGRADE=1` moves everything to its newest release (run `make test-latest` first).
lock: $(UV)
	$(UV) lock $(if $(UPGRADE),--upgrade)

# The etcd server and etcdctl, the Redis server, faketime (a node with a wrong clock in
# tests/integration/cluster/test_clock_skew.py) and zsh (the CLI's zsh completion is tested), from Debian when missing.
servers:
	@command -v etcd >/dev/null && command -v etcdctl >/dev/null && command -v redis-server >/dev/null \
	  && command -v faketime >/dev/null && command -v zsh >/dev/null || { \
	  echo "installing etcd-server, etcd-client, redis-server, faketime and zsh from Debian"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server etcd-client \
	    redis-server faketime zsh; }

# Debian's chromium for the console tests (Playwright drives it; it never downloads a browser).
browser:
	@test -x /usr/bin/chromium || { \
	  echo "installing chromium from Debian (the browser of tests/integration/web/test_console.py)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto --grpc_python_out=proto \
	    proto/orchestrator_api/v1/orchestrator.proto

# Static checks: ruff, then mypy --strict (settings in pyproject.toml) on the product, the dev tools,
# the tests (their shared helpers at tests/ top level included) and the benchmarks;
# $(call static_checks,<venv>) runs them with that venv's tools.
define static_checks
	$(1)/bin/ruff check orchestrator worker proto devtools tests bench examples
	$(1)/bin/python -m mypy orchestrator worker proto/orchestrator_api devtools tests bench
endef

lint: $(STAMP)
	$(call static_checks,$(VENV))

# Two test files at a time (pytest-xdist, whole files per worker so module fixtures are shared):
# the integration tests mostly wait on processes, so two cores carry two of them. The tests' own
# standalone Redis servers are slot-checked (TEST_REDIS=slots, tests/redis_mode.py): one-server Redis
# Clusters owning every slot, which refuse a `#!lua` script or a command touching keys of two hash
# slots, as a Redis Cluster would (issue 23); to clients they are one Redis. TEST_REDIS=single: plain.
TEST_REDIS ?= slots
test: lint $(STAMP) servers browser
	ORCHESTRATOR_TEST_REDIS=$(TEST_REDIS) $(PY) -m pytest -q -n 2 --dist loadfile --durations=15

# tests/unit: the decider, language, validators, expressions, the corpus in the simulator, the SDK
# against scripted nodes, the CLI's parser: no etcd, Redis, node or browser (tests/conftest.py refuses
# a test there that asks for one). tests/integration holds the rest, each marked `integration`.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile tests/unit

# The whole suite against the newest release of every dependency, resolved without the lock, in a
# venv of its own: how a release that breaks us is found by us first. It prints what differs from uv.lock.
test-latest: servers browser | $(UV)
	rm -rf .venv-latest
	$(UV) venv -q --python $(PYTHON) .venv-latest
	VIRTUAL_ENV=.venv-latest $(UV) pip install -q --upgrade -e ./proto -e ./worker -e '.[dev,bench,otlp]'
	.venv-latest/bin/python -m devtools.lock_drift
	$(call static_checks,.venv-latest)
	.venv-latest/bin/python -m pytest -q -n 2 --dist loadfile --durations=15

# SECURE=1: mutual TLS on every port, with a throwaway CA made for the run (it prints how to use it).
# REPLICAS=N: the production shape, a Redis master with N replicas and 3 Sentinels (redis_replicas in the YAML).
# REDIS=cluster: a Redis Cluster of 3 masters and 3 replicas instead of one Redis (redis_cluster_masters).
cluster: $(STAMP) servers
	$(if $(REPLICAS),ORCHESTRATOR_REDIS_REPLICAS=$(REPLICAS) )$(if $(REDIS),ORCHESTRATOR_REDIS=$(REDIS) )$(PY) -m devtools cluster --config deploy/local-cluster.yaml $(if $(SECURE),--secure)

# The order flow built both ways (examples/order_flow), side by side on a throwaway local cluster.
order-flow: $(STAMP) servers
	$(PY) -m examples.order_flow

drill: $(STAMP) servers
	$(PY) -m devtools drill --config deploy/local-cluster.yaml

# Benchmarks on a local three-node cluster vs Celery (~10 min); results in bench/results/.
# `make bench ARGS=--quick` is a ~2 min smoke run; `ARGS="--scenario throughput"` runs one scenario.
bench: $(STAMP) servers
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .venv-latest .pytest_cache
