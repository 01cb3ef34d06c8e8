#!/usr/bin/env bash
# Multi-GPU / multi-node training with torchrun: one process per GPU, started from outside, so Lightning spawns
# nothing and Hydra's run dir stays one per run. Run the same command on every node.
#
#   scripts/torchrun_train.sh experiment=caption_stage1_large module.init_from=ofa_large.pt          # 1 node
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 RUN_NAME=cap1 scripts/torchrun_train.sh experiment=...    # on node0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 RUN_NAME=cap1 scripts/torchrun_train.sh experiment=...    # on node1
#
# Environment: NNODES (1), NODE_RANK (0), GPUS_PER_NODE (all visible GPUs), MASTER_ADDR (127.0.0.1),
# MASTER_PORT (29500), RUN_NAME (required with NNODES > 1: every rank must agree on the run dir, which needs a
# file system shared by the nodes), TRAINER (ddp; fsdp for the large sizes), DRY_RUN=1 prints the command only.
set -euo pipefail
NNODES="${NNODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
if [[ -z "${GPUS_PER_NODE:-}" ]]; then
  GPUS_PER_NODE="$(nvidia-smi -L 2>/dev/null | wc -l || true)"
  [[ "${GPUS_PER_NODE}" -gt 0 ]] || GPUS_PER_NODE=1
fi
if [[ -z "${RUN_NAME:-}" ]]; then
  if [[ "${NNODES}" -gt 1 ]]; then
    echo "set RUN_NAME (the same on every node) for a multi-node run" >&2
    exit 2
  fi
  RUN_NAME="$(date +%Y%m%d-%H%M%S)"   # computed once here, so all local ranks share the run dir
fi
cmd=(torchrun --nnodes="${NNODES}" --node_rank="${NODE_RANK}" --nproc_per_node="${GPUS_PER_NODE}"
     --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}"
     -m ofa_lightning.cli.train "trainer=${TRAINER:-ddp}" "trainer.devices=${GPUS_PER_NODE}"
     "trainer.num_nodes=${NNODES}" "run_name=${RUN_NAME}" "$@")
if [[ "${DRY_RUN:-0}" == "1" ]]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
exec "${cmd[@]}"
