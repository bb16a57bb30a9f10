#!/usr/bin/env bash
# Equal-budget runs of the implicit steerable models against EGNN, one process at a time.
#
#   experiments/peers/run.sh nbody-time [MAX_TIME] [IMPLICIT_EPOCHS] [EGNN_EPOCHS]
#       equal wall clock (default 00:00:10:00); each model's cosine decay spans the epochs it runs
#       in that time on the machine (defaults 35 and 70: a loaded 2-core CPU, one thread)
#   experiments/peers/run.sh nbody-epochs [EPOCHS]     # equal epochs (default 15)
#   experiments/peers/run.sh qm9-time [MAX_TIME]       # QM9 HOMO, bonds+atoms vs EGNN 7×128
#
# Runs go to logs/peers/<mode>/; the table then comes from
#   python experiments/peers/make_table.py logs/peers/<mode> --out experiments/peers/<mode>.md
# Threads: OMP_NUM_THREADS (default 1 here, so that runs on a shared machine are comparable).
# The plain sweep `-m experiment=nbody model=nbody,egnn trainer.max_time=…` works as well (one
# max_epochs for both: with the cosine schedule of experiment=nbody, set it to what the slower runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:?mode: nbody-time | nbody-epochs | qm9-time}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
python=${PYTHON:-.venv/bin/python}
common=(callbacks=timed logger=csv callbacks.progress_bar=null)
case $mode in
  nbody-time)
    budget=${2:-00:00:10:00}
    $python -m steerable.train -m experiment=nbody model=nbody "trainer.max_epochs=${3:-35}" \
      "trainer.max_time=$budget" "${common[@]}" "hydra.sweep.dir=logs/peers/$mode/implicit"
    $python -m steerable.train -m experiment=nbody model=egnn "trainer.max_epochs=${4:-70}" \
      "trainer.max_time=$budget" "${common[@]}" "hydra.sweep.dir=logs/peers/$mode/egnn" ;;
  nbody-epochs)
    $python -m steerable.train -m experiment=nbody model=nbody,egnn "trainer.max_epochs=${2:-15}" \
      "${common[@]}" "hydra.sweep.dir=logs/peers/$mode" ;;
  qm9-time)
    $python -m steerable.train -m experiment=qm9_homo_bonds_atoms,qm9_homo_egnn trainer.max_epochs=100000 \
      "trainer.max_time=${2:-00:00:10:00}" "${common[@]}" "hydra.sweep.dir=logs/peers/$mode" ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
$python experiments/peers/make_table.py "logs/peers/$mode" --out "experiments/peers/$mode.md"
