#!/usr/bin/env bash
# Equal-budget runs of the implicit steerable models against EGNN, one process at a time.
#
#   experiments/peers/run.sh nbody-time [MAX_TIME]     # equal wall clock (default 00:00:10:00), one
#       model after the other; experiment=nbody decays each one's learning rate over that budget
#   experiments/peers/run.sh nbody-epochs [EPOCHS]     # equal epochs (default 15), cosine over them
#   experiments/peers/run.sh qm9-time [MAX_TIME]       # QM9 HOMO: the four ablation arms and EGNN 7×128
#
# Runs go to logs/peers/<mode>/; the table then comes from
#   python experiments/peers/make_table.py logs/peers/<mode> --out experiments/peers/<mode>.md
# Threads: OMP_NUM_THREADS (default 1 here, so that runs on a shared machine are comparable).
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:?mode: nbody-time | nbody-epochs | qm9-time}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
python=${PYTHON:-.venv/bin/python}
# min_epochs=0: the budget may end the first epoch too (the default trainer config finishes it)
common=(callbacks=timed logger=csv callbacks.progress_bar=null trainer.min_epochs=0)
case $mode in
  nbody-time)
    $python -m steerable.train -m experiment=nbody model=nbody,egnn "trainer.max_time=${2:-00:00:10:00}" \
      "${common[@]}" "hydra.sweep.dir=logs/peers/$mode" ;;
  nbody-epochs)
    epochs=${2:-15}
    $python -m steerable.train -m experiment=nbody model=nbody,egnn "trainer.max_epochs=$epochs" \
      trainer.max_time=null task.scheduler=null task.scheduler_interval=epoch \
      "++task.scheduler={_target_: torch.optim.lr_scheduler.CosineAnnealingLR, _partial_: true, T_max: $epochs}" \
      "${common[@]}" "hydra.sweep.dir=logs/peers/$mode" ;;
  qm9-time)
    $python -m steerable.train -m \
      experiment=qm9_homo_standard,qm9_homo,qm9_homo_bonds,qm9_homo_bonds_atoms,qm9_homo_egnn trainer.max_epochs=100000 \
      "trainer.max_time=${2:-00:00:10:00}" "${common[@]}" "hydra.sweep.dir=logs/peers/$mode" ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
$python experiments/peers/make_table.py "logs/peers/$mode" --out "experiments/peers/$mode.md"
