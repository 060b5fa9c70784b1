#!/usr/bin/env bash
# The CPU-scale reproduction of "ELECTRA beats masked-LM pretraining at equal compute"
# (issue 14; electra_jax/reproduce.py). Usage, from the repository root:
#
#   experiments/reproduce_cpu.sh WORKDIR [extra `electra-jax reproduce cpu` flags]
#
# Writes experiments/results/cpu_reproduction.md and experiments/results/cpu_reproduction/*.png.
# Re-running with the same WORKDIR skips finished stages and resumes an interrupted one.
set -euo pipefail
if [[ $# -lt 1 || "$1" == -* ]]; then
  echo "usage: $0 WORKDIR [electra-jax reproduce cpu flags...]" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
WORKDIR=$1
shift
ELECTRA_JAX=${ELECTRA_JAX:-electra-jax}
if [[ -x .venv/bin/electra-jax && "$ELECTRA_JAX" == electra-jax ]]; then ELECTRA_JAX=.venv/bin/electra-jax; fi
exec "$ELECTRA_JAX" reproduce cpu --workdir "$WORKDIR" --out experiments/results/cpu_reproduction.md --no-progress "$@"
