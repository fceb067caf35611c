#!/usr/bin/env bash
# Style checks: ruff (Python lint and format; settings in pyproject.toml [tool.ruff]) and clang-format
# (csrc/ C++ and CUDA; settings in .clang-format). Fails on any difference; --fix applies them.
# Installs the pinned versions of both tools into the Python environment when they are missing.
#   PYTHON=python3.11     interpreter whose environment holds the tools (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RUFF=ruff==0.17.6 CLANG_FORMAT=clang-format==23.1.5   # pinned: a new release may format differently
"$PY" -m pip install -q --disable-pip-version-check "$RUFF" "$CLANG_FORMAT"
clang_format=$("$PY" -c "import clang_format, os; print(os.path.join(os.path.dirname(clang_format.__file__), 'data', 'bin', 'clang-format'))")
mapfile -t sources < <(git ls-files 'csrc/*.cpp' 'csrc/*.h' 'csrc/*.cu' 'csrc/*.cuh')
if [ "${1:-}" = --fix ]; then
    "$PY" -m ruff check --fix .
    "$PY" -m ruff format .
    "$clang_format" -i "${sources[@]}"
else
    "$PY" -m ruff check .
    "$PY" -m ruff format --check .
    "$clang_format" --dry-run --Werror "${sources[@]}"
fi
echo "lint: ruff and clang-format clean (${#sources[@]} C++/CUDA files)"
