#!/usr/bin/env bash
# Multi-GPU / multi-node training with torchrun (mmengine's 'pytorch' launcher).
#   bash tools/dist_train.sh CONFIG GPUS [train.py options]
# One node: the rendezvous port is chosen by the launcher itself (torchrun
# --standalone binds port 0: no port is probed and then raced for), unless
# PORT is set. Several nodes: run it on every node with NNODES, NODE_RANK,
# MASTER_ADDR (and PORT) set, e.g. on node 0 of 2:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash tools/dist_train.sh ...
# On CPU the processes use the gloo backend (repseg swaps SyncBN for BN).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash tools/dist_train.sh CONFIG GPUS [train.py options]" >&2; exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python3}
if [ "$NNODES" = 1 ] && [ -z "${PORT:-}" ]; then
  RENDEZVOUS=(--standalone)
else
  RENDEZVOUS=(--nnodes="$NNODES" --node_rank="$NODE_RANK"
              --master_addr="$MASTER_ADDR" --master_port="${PORT:-29500}")
fi

PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}" \
exec $PYTHON -m torch.distributed.run \
    "${RENDEZVOUS[@]}" \
    --nproc_per_node="$GPUS" \
    "$(dirname "$0")/train.py" \
    "$CONFIG" --launcher pytorch "$@"
