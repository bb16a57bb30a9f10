#!/usr/bin/env bash
# One N-body lever at a time against the default, at equal epochs (default 15), one process at a time.
# Learning per CPU-second = (val/test MSE at equal epochs) combined with the step-time ratio of
# experiments/peers/ab_step.py (process CPU time: robust to a loaded machine).
#
#   experiments/peers/levers.sh [EPOCHS]     → $LEVERS_DIR/<name>/ (default logs/peers/levers), and the table
# LEVERS="default lr_2e-3 …" picks levers; each run takes experiment=nbody's optimiser, with the learning
# rate decayed by a cosine over EPOCHS instead of the recipe's time budget, unless the lever overrides them.
set -euo pipefail
cd "$(dirname "$0")/../.."
epochs=${1:-15}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
python=${PYTHON:-.venv/bin/python}
epoch_cosine=(task.scheduler=null "++task.scheduler={_target_: torch.optim.lr_scheduler.CosineAnnealingLR, _partial_: true, T_max: $epochs}"
  task.scheduler_interval=epoch trainer.max_time=null)
declare -A levers=(
  [default]=""
  [lr_2e-3]="task.optimizer.lr=2.0e-3"
  [lr_8e-3]="task.optimizer.lr=8.0e-3"
  [batch_100]="dataset.batch_size=100"
  [centered_input]="model.centered_input=true"
  [velocity_attrs]="model.velocity_attrs=true"
  [feature_attrs]="model.feature_attrs=true"
  [shared_phi]="model.shared_phi=true model.position_updates=false"
  [velocity_skip]="model.velocity_skip=1.0"
  [features_8]="model.num_features=8"
  [phi_channels_4]="model.conv.channels=4"
  [wd_1e-2]="task.optimizer.weight_decay=1.0e-2"
  [wd_1e-1]="task.optimizer.weight_decay=1.0e-1"
  [phi_no_bn]="model.conv.batch_norm=false"
  [fixed_positions]="model.position_updates=false"
  [feature_attrs_fixed_positions]="model.feature_attrs=true model.position_updates=false"
)
for name in ${LEVERS:-default lr_2e-3 batch_100 centered_input velocity_attrs}; do
  # shellcheck disable=SC2086
  $python -m steerable.train -m experiment=nbody "trainer.max_epochs=$epochs" "${epoch_cosine[@]}" ${levers[$name]} \
    callbacks=timed logger=csv callbacks.progress_bar=null "hydra.sweep.dir=${LEVERS_DIR:-logs/peers/levers}/$name"
done
$python experiments/peers/make_table.py "${LEVERS_DIR:-logs/peers/levers}"
