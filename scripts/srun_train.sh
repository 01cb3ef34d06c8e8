#!/usr/bin/env bash
# Inside a SLURM allocation (salloc, or the body of scripts/sbatch_train.sbatch): srun starts one task per GPU on
# every node; Lightning reads the SLURM environment (SLURMEnvironment) and spawns nothing.
#
#   salloc --nodes=2 --ntasks-per-node=8 --gpus-per-node=8 --cpus-per-task=10
#   scripts/srun_train.sh experiment=pretrain_large
#
# The run is named after the SLURM job (RUN_NAME overrides), so every task writes into one run dir; with
# resume=auto a requeued job continues from its last checkpoint. DRY_RUN=1 prints the command only.
set -euo pipefail
NNODES="${SLURM_NNODES:-${SLURM_JOB_NUM_NODES:-1}}"
TASKS_PER_NODE="${SLURM_NTASKS_PER_NODE:-${GPUS_PER_NODE:-1}}"
RUN_NAME="${RUN_NAME:-slurm-${SLURM_JOB_ID:-local}}"
cmd=(srun --ntasks-per-node="${TASKS_PER_NODE}" --kill-on-bad-exit=1
     python -m ofa_lightning.cli.train "trainer=${TRAINER:-ddp}" "trainer.devices=${TASKS_PER_NODE}"
     "trainer.num_nodes=${NNODES}" "run_name=${RUN_NAME}" "resume=${RESUME:-auto}" "$@")
if [[ "${DRY_RUN:-0}" == "1" ]]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
exec "${cmd[@]}"
