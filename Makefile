# The two set-up commands a fresh machine needs are `make demo` and `make test`; both build
# the virtual environment on their own. torch is pinned and installed before anything else
# so that no dependency pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard proto/fedfleet/v1/*.proto)

.PHONY: demo test lint unit proto crds bench clean kube-assets

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fedfleet local run examples/digits.yaml --out out/digits

lint: $(STAMP)
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/ruff format --check operator tests bench
	$(VENV)/bin/mypy

# The fast tier: logic against in-memory fakes, no processes or sockets (under a minute).
unit: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m unit

# Everything: lint, then the whole suite (unit, real gRPC, test API server, processes).
test: lint
	$(PY) -m pytest -q -p no:cacheprovider

# The real control plane for the "real" test lane (kube-apiserver, kube-controller-manager,
# kube-scheduler, etcd, helm) built from pinned Go modules into ~/.cache/fedfleet/; prints the
# folder:  KUBEBUILDER_ASSETS=$$(make -s kube-assets) make test
kube-assets:
	@hack/kube-assets/build.sh

# Regenerate the CRDs and the hub chart's copies; tests fail when either is stale.
crds: $(STAMP)
	$(PY) -m fedfleet.api.crds crds
	cp crds/*.yaml charts/fedfleet/crds/

proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=operator --pyi_out=operator \
		--grpc_python_out=operator $(PROTOS)

bench: $(STAMP)
	$(PY) bench/transfer.py

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache
