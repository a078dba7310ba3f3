# The promised entry points. Everything else lives in cluster/ and tests/.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, pinned to the CPU wheel on this disk, so nothing pulls a multi-GB CUDA build here;
# real users install the plugin without any torch pin
TORCH_PIN ?= torch==2.13.0
NODES ?= 2
GPUS ?= 2
CPUS ?= 4
# task/affinity binds tasks to real CPUs: then CPUS must not exceed this machine's cores
TASK_PLUGIN ?= task/none
# the Slurm release of the local cluster: 22.05 (the host's Debian 12 packages), 24.11 or 26.05 (each in
# a root filesystem built once by cluster/rootfs.sh); every target below then talks to that release
SLURM ?= 22.05
# the running release's clients first on PATH (nothing for 22.05)
RELEASE_ENV := . cluster/env.sh &&

.PHONY: venv cluster-up cluster-down demo test test-smoke test-unit test-cluster test-elastic bench bench-venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	# compat mode: a path entry that Snakemake's plugin discovery (pkgutil) can see
	$(PY) -m pip install -q -e ".[train,test]" --config-settings editable_mode=compat
	touch $@

cluster-up:
	NODES=$(NODES) GPUS=$(GPUS) CPUS=$(CPUS) TASK_PLUGIN=$(TASK_PLUGIN) SLURM=$(SLURM) bash cluster/up.sh

cluster-down:
	bash cluster/down.sh

demo: venv cluster-up
	$(RELEASE_ENV) cd workflows/train-eval && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" \
	  snakemake --profile ../../profiles/slurm-gpu --forceall
	@echo; cat workflows/train-eval/results/report.md
	@echo; $(RELEASE_ENV) $(VENV)/bin/slurm-gpu status -d workflows/train-eval
	@$(RELEASE_ENV) $(VENV)/bin/slurm-gpu timeline -d workflows/train-eval

test-unit: venv
	$(PY) -m pytest tests/unit -q

test-cluster: venv cluster-up
	$(RELEASE_ENV) $(PY) -m pytest tests/cluster -m "not four_nodes" -v -rA

# one pytest run, so its closing line counts every test: the whole suite on SLURM, then the smoke set
# on each other release (tests/cluster/conftest.py switches the cluster, building a release's root
# filesystem the first time); the cluster tests fail (not skip) when Slurm is down, and conftest.py
# fails the run if none of them ran
test: venv cluster-up
	$(RELEASE_ENV) PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest tests -m "not four_nodes" -v -rfE --durations=15 || { bash cluster/diagnose.sh; exit 1; }

# the elastic example as the issue states it, on a 4-node cluster (the tests reshape it and back): about 2 minutes
test-elastic: venv cluster-up
	$(RELEASE_ENV) PATH="$(CURDIR)/$(VENV)/bin:$$PATH" SLURM_GPU_SMOKE_RELEASES= $(PY) -m pytest tests/cluster/test_elastic.py -m four_nodes -v -rfE -s || { bash cluster/diagnose.sh; exit 1; }

# the smoke set alone, on SLURM only (the example pipeline, a signalled preemption, a hard requeue, a
# node failure, allocation mode): a quick look at one release
test-smoke: venv cluster-up
	$(RELEASE_ENV) PATH="$(CURDIR)/$(VENV)/bin:$$PATH" SLURM_GPU_SMOKE_RELEASES= $(PY) -m pytest tests/cluster -m release_smoke -v -rfE || { bash cluster/diagnose.sh; exit 1; }

# figures, not assertions: controller load and latency (against the official plugin and a bare sbatch
# loop), poll cost at 1,000/10,000 jobs, training overhead, preemption cost; one report in
# benchmarks/results/latest.md
bench: venv bench-venv cluster-up
	$(RELEASE_ENV) $(PY) benchmarks/run_all.py

# the official plugin, for comparison, in a venv of its own: installed beside slurm-gpu it would run
# `scontrol show config` at every Snakemake start, ours included, and skew our figures
OFFICIAL_PLUGIN ?= snakemake-executor-plugin-slurm==2.8.0
bench-venv: .venv-official/.installed

.venv-official/.installed: $(VENV)/.installed
	test -x .venv-official/bin/python || python3 -m venv .venv-official
	.venv-official/bin/pip install -q "snakemake==$$($(PY) -c 'import importlib.metadata as m; print(m.version("snakemake"))')" "$(OFFICIAL_PLUGIN)"
	touch $@

# Snakemake's own test workflows (from the sdist of the installed Snakemake on PyPI, cached in
# .cache/conformance/) under --executor slurm-gpu, each also with the local executor for comparison;
# known failures in tests/conformance/known_failures.py
test-conformance: venv cluster-up
	$(RELEASE_ENV) PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) tests/conformance/run.py --baseline

# the known failures under the official Slurm plugin on the same cluster: they are not slurm-gpu's
test-conformance-official: venv bench-venv cluster-up
	$(RELEASE_ENV) PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) tests/conformance/run.py --official .venv-official/bin/snakemake \
	  --only $$($(PY) -c 'import sys; sys.path.insert(0, "tests/conformance"); import known_failures as k; print(" ".join(sorted(k.KNOWN_FAILURES)))')
.PHONY: test-conformance test-conformance-official
