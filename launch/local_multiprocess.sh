#!/usr/bin/env bash
# Runs N processes of the same training command on this machine, each with D fake CPU devices,
# joined by jax.distributed over localhost (gloo collectives). A rehearsal of a multi-host run.
#   launch/local_multiprocess.sh N D --config=configs/synthetic.py:tiny --workdir=runs/mp
set -euo pipefail
N=${1:?number of processes}; D=${2:?devices per process}; shift 2
PORT=${PORT:-$((20000 + RANDOM % 20000))}
pids=()
for ((i = 0; i < N; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=$D" JAX_PLATFORMS=cpu \
    "${PYTHON:-python}" -m nuwa_xl_jax.train "$@" --coordinator_address="127.0.0.1:$PORT" \
      --num_processes="$N" --process_id="$i" &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null' INT TERM
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
exit $status
