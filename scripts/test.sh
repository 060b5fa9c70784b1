#!/usr/bin/env bash
# Installs electra-jax with its test extra into .venv and runs lint + the default test suite.
# "No tests collected" (pytest exit code 5) counts as failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
.venv/bin/ruff check electra_jax tests experiments
.venv/bin/ruff format --check electra_jax tests experiments
.venv/bin/python -m pytest -q -n 2 "$@"
