# One entry point for people and CI. Every target creates or reuses .venv/ in the repo root.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements-torch.txt | sha256sum | cut -c1-12)

.PHONY: venv test demo paper-cpu proto proto-check lint bundle clean compose-test

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

# The CPU-scale reproduction as the paper's Fig. 1 (docs/paper-topology.md): both CPU presets
# (trained when their work dirs are missing, about 1.5 h without baselines on 2 cores), their
# RKD-SC bundles merged into one two-task server, the validation splits streamed by four edges.
paper-cpu: venv
	$(BIN)/rkdsc train --preset cifar10-cpu --workdir runs/cifar10-cpu --resume --skip-baselines
	$(BIN)/rkdsc train --preset tinyimagenet-cpu --workdir runs/tinyimagenet-cpu --resume --skip-baselines
	$(BIN)/rkdsc bundle merge runs/cifar10-cpu/bundles/rkd-sc runs/tinyimagenet-cpu/bundles/rkd-sc \
	    --out runs/paper-cpu/bundle --force
	$(BIN)/rkdsc samples --workdir runs/cifar10-cpu --split val --out runs/paper-cpu/cifar10-val --force
	$(BIN)/rkdsc samples --workdir runs/tinyimagenet-cpu --split val --out runs/paper-cpu/tinyimagenet-val --force
	$(BIN)/rkdsc demo --config deploy/paper-cpu.toml --out runs/paper-cpu/demo

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
