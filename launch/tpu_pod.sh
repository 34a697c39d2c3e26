#!/usr/bin/env bash
# Installs the package and runs the same training command on every worker of a Cloud TPU pod slice.
# jax.distributed.initialize() reads the TPU environment, so no coordinator flags are needed.
#   launch/tpu_pod.sh TPU_NAME ZONE --config=configs/flintstones.py:128 --workdir=gs://bucket/run
set -euo pipefail
TPU=${1:?TPU name}; ZONE=${2:?zone}; shift 2
REPO=${REPO:-$(git remote get-url origin 2>/dev/null || echo "")}
ARGS=$(printf '%q ' "$@")
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "
  set -e
  if [ ! -d nuwa_xl_jax ]; then git clone $REPO nuwa_xl_jax; fi
  cd nuwa_xl_jax && git pull --ff-only || true
  python3 -m pip install -q -e . 'jax[tpu]'
  python3 -m nuwa_xl_jax.train --distributed $ARGS
"
