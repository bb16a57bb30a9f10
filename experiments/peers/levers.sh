#!/usr/bin/env bash
# One N-body lever at a time against the default, at equal epochs (default 15), one process at a time.
# Learning per CPU-second = (val/test MSE at equal epochs) combined with the step-time ratio of
# experiments/peers/ab_step.py (process CPU time: robust to a loaded machine).
#
#   experiments/peers/levers.sh [EPOCHS]     → $LEVERS_DIR/<name>/ (default logs/peers/levers), and the table
# LEVERS="default lr_1e-3 …" picks levers; each run takes experiment=nbody's optimiser and schedule
# (cosine over EPOCHS) unless the lever overrides them.
set -euo pipefail
cd "$(dirname "$0")/../.."
epochs=${1:-15}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
python=${PYTHON:-.venv/bin/python}
declare -A levers=(
  [default]=""
  [shared_phi]="model.shared_phi=true"
  [lr_1e-3]="task.optimizer.lr=1.0e-3"
  [batch_50]="dataset.batch_size=50"
  [features_8]="model.num_features=8"
  [phi_channels_4]="model.conv.channels=4"
  [velocity_skip]="model.velocity_skip=1.0"
  [lr_2e-3]="task.optimizer.lr=2.0e-3"
  [wd_1e-2]="task.optimizer.weight_decay=1.0e-2"
  [velocity_attrs]="model.velocity_attrs=true"
  [centered_input]="model.centered_input=true"
  [feature_attrs]="model.feature_attrs=true"
  [lr_2e-3_batch_50]="task.optimizer.lr=2.0e-3 dataset.batch_size=50"
)
for name in ${LEVERS:-default shared_phi lr_1e-3 batch_50 features_8 phi_channels_4 velocity_skip}; do
  # shellcheck disable=SC2086
  $python -m steerable.train -m experiment=nbody "trainer.max_epochs=$epochs" ${levers[$name]} \
    callbacks=timed logger=csv callbacks.progress_bar=null "hydra.sweep.dir=${LEVERS_DIR:-logs/peers/levers}/$name"
done
$python experiments/peers/make_table.py "${LEVERS_DIR:-logs/peers/levers}"
