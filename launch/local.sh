#!/usr/bin/env bash
# Multi-process training on one machine (what the 2-process test runs): N processes on 127.0.0.1, each with
# DEVICES simulated CPU devices (or its own GPU). Usage:
#   launch/local.sh N [DEVICES] -- jepa pretrain --config configs/pretrain/demo.py:smoke --workdir /tmp/run
# Every process gets JEPA_COORDINATOR / JEPA_NUM_PROCESSES / JEPA_PROCESS_ID; logs go to $LOGDIR/process_i.log.
set -euo pipefail
N=${1:?number of processes}; shift
DEVICES=2
if [[ "${1:-}" != "--" ]]; then DEVICES=$1; shift; fi
[[ "${1:-}" == "--" ]] && shift
PORT=${JEPA_PORT:-$((20000 + RANDOM % 20000))}
LOGDIR=${LOGDIR:-$(mktemp -d)}
pids=()
for ((i = 0; i < N; i++)); do
  JEPA_COORDINATOR=127.0.0.1:$PORT JEPA_NUM_PROCESSES=$N JEPA_PROCESS_ID=$i JAX_PLATFORMS=${JAX_PLATFORMS:-cpu} \
  XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES ${XLA_FLAGS:-}" \
    "$@" >"$LOGDIR/process_$i.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    status=1
    echo "process $i failed; its log ($LOGDIR/process_$i.log) ends with:" >&2
    tail -n 30 "$LOGDIR/process_$i.log" >&2
  fi
done
exit $status
