# steerable: common tasks. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYS ?= python3
ARGS ?=

# Use the active virtualenv/conda env if there is one, otherwise ./.venv.
ifneq ($(strip $(VIRTUAL_ENV)$(CONDA_PREFIX)),)
  PY := python
  MAKE_VENV :=
else
  PY := .venv/bin/python
  MAKE_VENV := .venv/bin/python
endif

.PHONY: help install train test test-smoke test-slow bench wheelhouse gpu-check lint clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(MAKE_VENV):
	@$(PYTHON_SYS) -m venv .venv 2>/dev/null || { \
	  rm -rf .venv; \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo ">> python3 -m venv failed: installing python3-venv with apt-get"; \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv && \
	    $(PYTHON_SYS) -m venv .venv; \
	  else echo ">> python3 -m venv failed: install python3-venv (Debian) or activate a venv/conda env"; exit 1; fi; }

# tools/install.py keeps an installed torch >= 2.3 (else installs torch==2.13.0, the CPU wheel on this
# machine's Python 3.11), picks numpy 1 or 2 (2 on Python >= 3.13 or where numpy 2 is installed, building
# escnn's lie_learn for it), installs gfortran/g++ with apt-get when root, and says what it did.
# Overrides: make install NUMPY=1|2 TORCH="torch==2.5.1".
install: $(MAKE_VENV) ## Install steerable (editable, with dev extras) into .venv or the active env
	$(PY) tools/install.py $(if $(NUMPY),--numpy $(NUMPY)) $(if $(TORCH),--torch "$(TORCH)")

train: ## Train (default experiment); pass Hydra overrides via ARGS="trainer.max_epochs=1 ..."
	$(PY) -m steerable.train $(ARGS)

# pytest exits 5 when no test was collected (e.g. ARGS="-k nothing"): not a failure
test: ## Fast tests (everything not marked slow)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -m "not slow" $(ARGS) || [ $$? -eq 5 ]

# What CI also runs in a fresh Python 3.13 + numpy 2 environment: escnn's numbers against the stored
# reference, a checkpoint from the numpy-1 install, core layers' and models' equivariance, one
# experiment trained through the command line.
SMOKE_TESTS := tests/core/test_escnn_reference.py tests/core/test_portable_basis.py tests/core/test_linear.py \
  tests/core/test_point_conv.py tests/models/test_models.py tests/framework/test_experiment_smoke.py
test-smoke: ## Smoke subset (escnn reference values, core + model equivariance, a 2-step experiment)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -m "not slow" $(SMOKE_TESTS) $(ARGS)

test-slow: ## Slow tests only (training sweeps, real SLURM)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -m slow $(ARGS) || [ $$? -eq 5 ]

bench: ## Benchmark node-wise vs per-edge kernel contraction
	$(PY) -m steerable.bench $(ARGS)

wheelhouse: ## cp312 wheels a bare CUDA image lacks (escnn, lie_learn for numpy 2, Hydra) into wheelhouse/
	$(PY) tools/wheelhouse.py --out wheelhouse

# DEVICE=cuda (default) writes experiments/gpu/report.{json,md}; DEVICE=cpu: tiny sizes, a temp out dir
gpu-check: ## One-command GPU check (tests, bench, N-body, ModelNet): DEVICE=cuda|cpu OUT=dir ARGS="..."
	DEVICE="$(DEVICE)" OUT="$(OUT)" bash tools/gpu_check.sh $(ARGS)

lint: ## Ruff lint
	$(PY) -m ruff check steerable tests tools

clean: ## Remove caches and run outputs (keeps .venv and data/)
	rm -rf .pytest_cache .ruff_cache build *.egg-info outputs multirun logs wandb lightning_logs
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +
