# ttrl: run `make help` for the list of targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch keeps the venv small; on a CUDA machine use e.g. `make setup TORCH=torch`.
TORCH ?= torch==2.13.0
EXTRAS ?= dev,hf,behavior,slurm,optuna
STAMP := $(VENV)/.installed

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP) ## Create .venv with ttrl and its dev, hf, behavior, slurm and optuna extras
.PHONY: help setup test test-slow test-gpu test-all lint format demo bench device-wheels device-check clean cpu-datasets cpu-table

test: $(STAMP) ## Run the default test suite (CPU, a few minutes)
	$(PY) -m pytest -m "not slow and not gpu" -q

test-slow: $(STAMP) ## Run the slow tests (minutes each on a 2-core CPU)
	$(PY) -m pytest -m "slow and not gpu" -q

test-gpu: $(STAMP) ## Run the tests that need CUDA
	$(PY) -m pytest -m gpu -q

test-all: $(STAMP) ## Run every test this machine can run
	$(PY) -m pytest -q

lint: $(STAMP) ## Check style with ruff (lint and format)
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix src tests scripts
	$(VENV)/bin/ruff format src tests scripts

demo: $(STAMP) ## The main job: make the demo dataset, train, plan, print the normalised score
	$(PY) scripts/demo.py

# The CPU-scale table (configs/experiment/cpu/, docs/results.md): 100k-step datasets in data/minari.
CPU_DATASETS := halfcheetah-medium hopper-medium walker2d-medium halfcheetah-medium-replay hopper-medium-replay
CPU_MINARI := MINARI_DATASETS_PATH=$(CURDIR)/data/minari
cpu-datasets: $(STAMP) ## The five 100k-step datasets of the CPU table (a few minutes)
	$(CPU_MINARI) $(PY) -c "import sys; from ttrl.demo import ensure_dataset; \
		[print(d, ensure_dataset(d, 100_000, 0)['normalized_score_mean']) for d in sys.argv[1:]]" $(CPU_DATASETS)

cpu-table: cpu-datasets ## The whole CPU table: TT, BC and IQL, 5 datasets x 2 seeds, then the report (hours)
	$(CPU_MINARI) $(PY) scripts/train.py -m hydra/sweeper=cpu hydra.sweep.dir=multirun/cpu/train
	$(CPU_MINARI) $(PY) scripts/train_baseline.py -m hydra/sweeper=cpu_baselines hydra.sweep.dir=multirun/cpu/baselines
	$(CPU_MINARI) $(PY) scripts/train_baseline.py -m hydra/sweeper=cpu_iql hydra.sweep.dir=multirun/cpu/iql
	$(PY) scripts/report.py multirun/cpu/train multirun/cpu/baselines multirun/cpu/iql --out multirun/cpu

bench: $(STAMP) ## Training and planning benchmarks (prints JSON lines)
	$(PY) scripts/bench.py train
	$(PY) scripts/bench.py plan

# What scripts/device_check.sh needs beyond a CUDA image's PyTorch stack, at this venv's versions.
DEVICE_PYTHON ?= 3.12
DEVICE_BINARY_WHEELS := mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 websockets==15.0.1
DEVICE_PURE_WHEELS := gymnasium==1.4.0 minari==0.5.4 farama-notifications==0.0.6 glfw==2.11.0 \
	pyopengl==3.1.10 hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3
device-wheels: $(STAMP) ## Wheels in .whl/ for scripts/device_check.sh on a GPU machine without PyPI
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version $(DEVICE_PYTHON) \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d .whl $(DEVICE_BINARY_WHEELS)
	$(PY) -m pip wheel -q --no-deps -w .whl $(DEVICE_PURE_WHEELS)
	du -sh .whl

device-check: ## The GPU figures in one call (scripts/device_check.sh; on CUDA machines)
	bash scripts/device_check.sh

clean: ## Remove the venv, caches and run outputs
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache
