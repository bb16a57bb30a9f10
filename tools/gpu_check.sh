#!/usr/bin/env bash
# The one-command GPU check (python -m steerable.gpu_check), runnable on a bare GPU machine.
#
#   bash tools/gpu_check.sh                  # DEVICE=cuda: full sizes, report in experiments/gpu/
#   DEVICE=cpu bash tools/gpu_check.sh       # tiny sizes, report in a temp dir
#   make gpu-check [DEVICE=cpu] [OUT=dir] [ARGS="--stages tests,bench"]
#
# Environment: DEVICE (cuda | cuda:<i> | cpu; default cuda), OUT (report dir), SIZE (full | tiny),
# PYTHON (interpreter; default: the active env's python, else ./.venv/bin/python, else python3),
# GPU_DEPS_DIR (where wheelhouse/*.whl is installed when escnn or hydra is missing; default
# /tmp/steerable-site). Extra arguments go to python -m steerable.gpu_check.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd)"

DEVICE="${DEVICE:-cuda}"
if [ "$DEVICE" = cpu ]; then
  SIZE="${SIZE:-tiny}"
  OUT="${OUT:-${TMPDIR:-/tmp}/steerable-gpu-check-cpu}"
else
  SIZE="${SIZE:-full}"
  OUT="${OUT:-experiments/gpu}"
fi

if [ -z "${PYTHON:-}" ]; then
  if [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] && command -v python >/dev/null 2>&1; then
    PYTHON=python
  elif [ -x .venv/bin/python ]; then
    PYTHON=.venv/bin/python
  else
    PYTHON=python3
  fi
fi

DEPS="${GPU_DEPS_DIR:-/tmp/steerable-site}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
[ -d "$DEPS" ] && export PYTHONPATH="$DEPS:$PYTHONPATH"
if ! "$PYTHON" -c 'import escnn, hydra' >/dev/null 2>&1; then
  if compgen -G "wheelhouse/*.whl" >/dev/null; then
    echo ">> escnn/hydra not importable: installing wheelhouse/*.whl into $DEPS"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$DEPS" wheelhouse/*.whl
    case ":$PYTHONPATH:" in *":$DEPS:"*) ;; *) export PYTHONPATH="$DEPS:$PYTHONPATH" ;; esac
  else
    echo "warning: escnn or hydra is not importable by $PYTHON and there is no wheelhouse/*.whl" \
         "(run 'make wheelhouse' on a machine with a package index, or 'make install')" >&2
  fi
  # go on either way: the stages that need them fail and the report says why
  "$PYTHON" -c 'import escnn, hydra' || echo "warning: escnn/hydra not importable (see above)" >&2
fi

export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}" PYTHONUNBUFFERED=1
echo ">> $PYTHON -m steerable.gpu_check --device $DEVICE --size $SIZE --out $OUT $*"
exec "$PYTHON" -m steerable.gpu_check --device "$DEVICE" --size "$SIZE" --out "$OUT" "$@"
