# Every target does its own set-up on a fresh machine: a local .venv with the project installed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench compile-kernels mutants clean gpu-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: on the project's CPU machines this resolves to the local CPU build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[video,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/autogaze-fast demo

test: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# ruff (lint + import order), then the import contracts of pyproject.toml (layers, no circles). The
# contracts are checked on the package as it installs (kernels/ and reference/ inside autogaze_fast/,
# as setuptools' package-dir lays them), assembled under build/layers.
LAYERS := build/layers
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	rm -rf $(LAYERS) && mkdir -p $(LAYERS)
	cp -r autogaze_fast $(LAYERS)/ && cp -r kernels $(LAYERS)/autogaze_fast/kernels && cp -r reference $(LAYERS)/autogaze_fast/reference
	cd $(LAYERS) && PYTHONPATH=. $(abspath $(VENV))/bin/lint-imports $(abspath pyproject.toml)

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest bench -q -o python_files='bench_*.py' --benchmark-enable --benchmark-json=bench/results.json
	$(PY) bench/speedup_table.py bench/results.json

compile-kernels: $(STAMP)
	$(VENV)/bin/autogaze-fast compile-kernels

# Plant each bug of tests/mutants/mutants.py in a temporary copy, one at a time, and report which
# test catches it (bench/results/mutants.md). Slow (the suite runs once per mutant): not in CI.
mutants: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) tests/mutants/run_mutants.py

# On a CUDA machine where the project is installed beside a preinstalled torch + triton
# (`pip install --no-deps --no-build-isolation -e .`): no .venv is made, $(PYTHON) runs it.
# Parity, end-to-end and kernel timings, then `pytest -m gpu` and, in what is left, the other
# `triton` tests, in ~6 minutes on one H200; without CUDA the same report on the torch twins at
# small sizes. Writes $(OUT)/gpu-check.{json,md}. On a lent machine: bash bench/gpu_check_device.sh.
OUT ?= bench/results/gpu-$(shell date +%Y-%m-%d)
gpu-check:
	HF_HUB_OFFLINE=1 $(PYTHON) -m autogaze_fast gpu-check --out $(OUT)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
