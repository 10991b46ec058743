# vectorschema — self-documenting Makefile: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install controlplane node helm cluster cluster-down crds docs docs-gen docs-serve image lint lint-manifests test test-unit test-conformance conformance test-e2e soak run bench bench-smoke bench-growth clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found " + sys.version.split()[0] + "): install it and re-run, or set PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,docs]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project (editable) with dev and docs dependencies

controlplane: ## Build (or reuse from ~/.cache/vectorschema) kube-apiserver, controller-manager, etcd
	@bash tools/controlplane/build.sh >/dev/null

node: ## Build (or reuse from ~/.cache/vectorschema) kubelet, kube-proxy, scheduler, containerd, runc, CNI plugins
	@bash tools/node/build.sh >/dev/null

helm: ## Build (or reuse from ~/.cache/vectorschema) the pinned helm, from the Go module proxy
	@bash tools/helm/build.sh >/dev/null

image: install ## Build (or reuse) the operator image from the Dockerfile (buildah, no daemon); prints the OCI archive and the image name last
	@PYTHONPATH=tools $(BIN)/python -m image

cluster: install controlplane ## Start the local control plane (and a node, when the host can) in the background; prints the export line last
	@PYTHONPATH=tools $(BIN)/python -m devenv up

.PHONY: deploy
deploy: install controlplane node helm ## The operator as users run it: node, image, Qdrant, helm install into vectorschema-system; prints the export line last
	@PYTHONPATH=tools $(BIN)/python tools/deploy.py

cluster-down: ## Stop the local control plane and its node started by `make cluster`
	@PYTHONPATH=tools $(BIN)/python -m devenv down

crds: install ## Generate crds/*.yaml from the Pydantic models, and their chart/kustomize copies
	$(BIN)/python -m vectorschema.crdgen --out crds
	$(BIN)/python tools/crdcopies.py

docs: install ## Build the docs site into site/ (mkdocs build --strict: a broken link or a missing page fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

docs-gen: install ## Regenerate the generated reference pages (CRDs, Helm values, metrics, reasons, env, CLI) under docs/reference/
	PYTHONPATH=tools $(BIN)/python tools/docsgen.py

docs-serve: install ## Serve the docs site on http://127.0.0.1:8000 with live reload
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

lint: install lint-manifests docs ## ruff, mypy --strict, import-linter, gofmt, helm lint, checkov, the docs site
	$(BIN)/ruff check operator tests tools bench examples
	$(BIN)/ruff format --check operator tests tools bench examples
	$(BIN)/mypy --strict
	$(BIN)/mypy --strict tools/devenv tools/image tools/controlplane/gen_gomod.py tools/run.py tools/deploy.py tools/crdcopies.py tools/docsgen.py
	$(BIN)/mypy --strict examples/backfill/fill.py
	$(BIN)/mypy --strict bench/run.py bench/cluster.py bench/bench_hooks.py bench/baseline_responder.py
	$(BIN)/lint-imports
	@test -z "$$(gofmt -l tools/kstatus tools/argocdhealth tools/helm tools/node)" || { gofmt -l tools/kstatus tools/argocdhealth tools/helm tools/node; echo 'gofmt: files above need formatting'; exit 1; }

lint-manifests: install helm ## helm lint of the chart; checkov over the rendered chart and the kustomize output
	"$$(bash tools/helm/build.sh)" lint --strict charts/vectorschema
	KUBECTL=$(BIN)/kubectl PYTHON=$(PYTHON) bash tools/checkov/run.sh

test-unit: install ## Unit tests (pure, no cluster)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-conformance: install ## The Qdrant gateway contract against the embedded backend (part of `make test`)
	env -u CONFORMANCE_QDRANT_URL -u CONFORMANCE_QDRANT_API_KEY $(BIN)/pytest tests/conformance $(PYTEST_ARGS)

conformance: install ## The gateway contract against your Qdrant: make conformance QDRANT_URL=... [QDRANT_API_KEY=...] (no URL: the embedded store)
	@test -n "$(QDRANT_URL)" || echo 'conformance: no QDRANT_URL given: running against the embedded store (qdrant-client local mode)'
	CONFORMANCE_QDRANT_URL='$(QDRANT_URL)' CONFORMANCE_QDRANT_API_KEY='$(QDRANT_API_KEY)' $(BIN)/pytest tests/conformance -ra $(PYTEST_ARGS)

test-e2e: install controlplane ## End-to-end tests on the real local control plane
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

test: install controlplane lint test-unit test-conformance test-e2e bench-smoke ## Everything CI runs: set-up, lint, unit and e2e tests, the benchmarks' smoke run

SOAK_MINUTES ?= 45
soak: install controlplane ## The long reliability suite (longer outages, more rounds and edits); stops after SOAK_MINUTES
	VECTORSCHEMA_SOAK=1 timeout --signal=INT --kill-after=60 $$(( $(SOAK_MINUTES) * 60 )) \
		$(BIN)/pytest tests/e2e/test_reliability_outages.py tests/e2e/test_reliability_edits.py \
		tests/e2e/test_reliability_kills.py tests/e2e/test_reliability_cycles.py \
		tests/e2e/test_reliability_inputs.py -s $(PYTEST_ARGS)

run: install controlplane ## The main job: control plane (if no cluster), CRDs, samples, operator; Ctrl-C stops
	$(BIN)/python tools/run.py

bench: install controlplane ## Benchmarks: bench/run.py, then the operator on the local control plane (bench-results.json); QDRANT_URL=... adds the server path
	$(BIN)/python bench/run.py
	QDRANT_URL='$(QDRANT_URL)' QDRANT_API_KEY='$(QDRANT_API_KEY)' PYTHONPATH=tools $(BIN)/python bench/cluster.py $(BENCH_ARGS)

bench-growth: install controlplane ## The growth table (100, 1,000, 10,000 Namespaces; long): embedded, or QDRANT_URL=...
	QDRANT_URL='$(QDRANT_URL)' QDRANT_API_KEY='$(QDRANT_API_KEY)' PYTHONPATH=tools $(BIN)/python bench/cluster.py --stages growth --out bench-growth.json $(BENCH_ARGS)

bench-smoke: install controlplane ## Every benchmark stage at tiny sizes, every figure checked (no timing; part of make test)
	$(BIN)/pytest tests/bench $(PYTEST_ARGS)

clean: ## Remove the virtualenv, local state, the embedded Qdrant data and the built docs site
	rm -rf $(VENV) .state .data site
