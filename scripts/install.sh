#!/usr/bin/env bash
# Installs wspace and everything it needs into one Python (PY or PYTHON, default python3).
# torch first, and the right build of it: a bare `torch` requirement on Linux pulls the CUDA
# build (gigabytes). A torch that is already there (a GPU image's) is kept; with an NVIDIA
# driver present the CUDA build comes from PyPI; otherwise the CPU build 2.13.0+cpu, from a
# local wheel when pip's find-links has one, else from PyTorch's CPU index.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-${PYTHON:-python3}}
PIP=("$PY" -m pip install -q --disable-pip-version-check)
TORCH=2.13.0
if "$PY" -c "import torch" 2>/dev/null; then
  echo "install: keeping torch $("$PY" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  "${PIP[@]}" "torch==$TORCH"
else
  err=$(mktemp)
  if ! "${PIP[@]}" "torch==$TORCH+cpu" 2>"$err"; then
    echo "install: no local torch $TORCH+cpu wheel ($(grep -m1 -i error "$err" || tail -n1 "$err")); trying PyTorch's CPU index" >&2
    "${PIP[@]}" "torch==$TORCH+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
  fi
  rm -f "$err"
fi
"${PIP[@]}" -e ".[test]"
# The teacher of the embedded model: only its weights.tar is needed, not its heavy dependencies.
"${PIP[@]}" --no-deps "gan-face-generate==1.1.1"
