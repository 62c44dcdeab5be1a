#!/usr/bin/env bash
# Pretraining on a Cloud TPU pod slice: the same command on every worker; jax.distributed discovers the slice
# (JEPA_DISTRIBUTED=auto). Usage:
#   TPU=my-v5p-64 ZONE=us-east5-a launch/tpu_pod.sh --config configs/pretrain/vitl16.py --workdir gs://bucket/run
# The workdir must be shared by all workers (a GCS bucket); data shards too.
set -euo pipefail
: "${TPU:?name of the TPU VM slice}" "${ZONE:?its zone}"
REPO=${REPO:-~/jepa}
ARGS=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command \
  "cd $REPO && JEPA_DISTRIBUTED=auto .venv/bin/jepa pretrain$ARGS 2>&1 | tee -a /tmp/jepa_pretrain.log"
