# One entry point for people and CI. Every target creates or reuses .venv/ in the repo root.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements-torch.txt | sha256sum | cut -c1-12)

.PHONY: venv test demo proto proto-check lint bundle clean compose-test

venv: $(STAMP)

$(STAMP): pyproject.toml requirements-torch.txt
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH (or: make PY=python3 ...)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-torch.txt
	$(BIN)/pip install -q -e '.[train,demo,dev]'
	touch $@

test: venv proto-check
	$(BIN)/python -m pytest -q -m "not docker" tests

demo: venv
	$(BIN)/rkdsc demo --config deploy/topology.toml --out runs/demo

proto: venv
	$(BIN)/python scripts/gen_proto.py

proto-check: venv
	$(BIN)/python scripts/gen_proto.py --check

bundle: venv
	$(BIN)/rkdsc train-default --out deploy/bundle

compose-test: venv
	bash deploy/compose_test.sh

clean:
	rm -rf runs .pytest_cache
