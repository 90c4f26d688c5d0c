#!/usr/bin/env bash
# Multi-GPU / multi-node testing with torchrun (mmengine's 'pytorch' launcher).
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options]
# One node: the rendezvous port is chosen by the launcher itself (torchrun
# --standalone binds port 0: no port is probed and then raced for), unless
# PORT is set. Several nodes: run it on every node with NNODES, NODE_RANK,
# MASTER_ADDR (and PORT) set, e.g. on node 0 of 2:
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
    "$(dirname "$0")/test.py" \
    "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
