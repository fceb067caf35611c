#!/usr/bin/env bash
# Installs fastwnll, its dependencies and its test tools into the current Python environment, and
# builds the compiled extension (C++ always; CUDA too when a CUDA toolkit and a CUDA build of torch
# are found). Skips the build when the extension is already current (scripts/extension_current.py
# says what "current" means); FASTWNLL_REBUILD=1 forces it.
#   PYTHON=python3.11     interpreter to install into (default: python3)
#   TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"   torch to install when none is importable
#   FASTWNLL_CUDA=auto|0|1   see setup.py
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
    # shellcheck disable=SC2086
    "$PY" -m pip install -q ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
fi
if [ "${FASTWNLL_REBUILD:-0}" = 1 ] || ! "$PY" scripts/extension_current.py; then
    "$PY" -m pip install -q "setuptools>=64" wheel ninja pybind11
    "$PY" -m pip install -q --no-build-isolation -e ".[test]"
fi
"$PY" -c "from fastwnll.extension.info import print_info; print_info()"
