#!/usr/bin/env bash
# Multi-GPU / multi-node testing with torchrun (mmengine's 'pytorch' launcher).
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options]
# Several nodes: run it on every node with NNODES, NODE_RANK, MASTER_ADDR
# (and PORT) set, e.g. on node 0 of 2:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash tools/dist_test.sh ...
# On CPU the processes use the gloo backend (repseg swaps SyncBN for BN).
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options]" >&2; exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python3}

PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}" \
exec $PYTHON -m torch.distributed.run \
    --nnodes=$NNODES \
    --node_rank=$NODE_RANK \
    --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS \
    --master_port=$PORT \
    "$(dirname "$0")/test.py" \
    "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
