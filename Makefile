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

.PHONY: help install train test test-slow bench lint clean

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

# escnn's dependency py3nj compiles Fortran. Without gfortran (and no root to apt-get it) we install
# escnn and steerable with --no-deps and every other dependency explicitly, and say so.
install: $(MAKE_VENV) ## Install steerable (editable, with dev extras) into .venv or the active env
	$(PY) -m pip install --upgrade pip "setuptools<81" wheel
	@if ! command -v gfortran >/dev/null 2>&1 && [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  echo ">> gfortran missing (needed by escnn -> py3nj): installing it with apt-get"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y gfortran; \
	fi
	@if ! command -v g++ >/dev/null 2>&1 && [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  echo ">> g++ missing (torch.compile on CPU, model.conv.compile_mlp=true): installing it with apt-get"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y g++; \
	fi
	$(PY) -m pip install torch==2.13.0
	@if command -v gfortran >/dev/null 2>&1; then \
	  $(PY) -m pip install -e ".[dev]"; \
	else \
	  echo ">> WARNING: gfortran missing and not root: installing escnn WITHOUT py3nj"; \
	  echo ">> (escnn then uses its slower pure-Python Clebsch-Gordan code). Install gfortran and re-run."; \
	  $(PY) -m pip install lie-learn pymanopt autograd && \
	  $(PY) -m pip install --no-deps escnn==1.0.11 && \
	  $(PY) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	    print("\n".join(r for r in p["dependencies"] + p["optional-dependencies"]["dev"] if not r.startswith("escnn")))' \
	    > .deps-no-escnn.txt && \
	  $(PY) -m pip install -r .deps-no-escnn.txt && rm -f .deps-no-escnn.txt && \
	  $(PY) -m pip install --no-deps -e .; \
	fi

train: ## Train (default experiment); pass Hydra overrides via ARGS="trainer.max_epochs=1 ..."
	$(PY) -m steerable.train $(ARGS)

# pytest exits 5 when no test was collected (e.g. ARGS="-k nothing"): not a failure
test: ## Fast tests (everything not marked slow)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -m "not slow" $(ARGS) || [ $$? -eq 5 ]

test-slow: ## Slow tests only (training sweeps, real SLURM)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -m slow $(ARGS) || [ $$? -eq 5 ]

bench: ## Benchmark node-wise vs per-edge kernel contraction
	$(PY) -m steerable.bench $(ARGS)

lint: ## Ruff lint
	$(PY) -m ruff check steerable tests

clean: ## Remove caches and run outputs (keeps .venv and data/)
	rm -rf .pytest_cache .ruff_cache build *.egg-info outputs multirun logs wandb lightning_logs
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +
