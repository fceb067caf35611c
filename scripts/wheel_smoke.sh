#!/usr/bin/env bash
# Packaging check: builds an sdist, builds a wheel from that sdist (so the sdist provably carries
# everything the build needs), installs the wheel into a fresh virtual environment and runs
# scripts/smoke_test.py there from a directory outside the repository.
# The fresh environment sees the packages of $PYTHON (torch and the other dependencies, via a .pth
# file) instead of installing them again, so nothing is downloaded; fastwnll itself comes only from
# the wheel. The wheel is CPU-only (FASTWNLL_CUDA=0) unless FASTWNLL_CUDA says otherwise.
#   PYTHON=python3   interpreter with torch and fastwnll's dependencies installed
#   KEEP=DIR         keep the sdist and the wheel in DIR
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" -m pip install -q build
echo "== sdist"
"$PY" -m build --sdist --no-isolation --outdir "$WORK/dist" . > "$WORK/sdist.log" 2>&1 || { cat "$WORK/sdist.log"; exit 1; }
SDIST=$(ls "$WORK"/dist/fastwnll-*.tar.gz)
tar -tzf "$SDIST" > "$WORK/sdist.txt"
for member in csrc/ops.cpp csrc/wnll.h csrc/cuda/wnll_cuda.cu kernels/tv_primal_dual.py setup.py pyproject.toml LICENSE; do
    grep -q "^fastwnll-[^/]*/$member\$" "$WORK/sdist.txt" || { echo "the sdist lacks $member"; exit 1; }
done
echo "== wheel from $(basename "$SDIST")"
FASTWNLL_CUDA=${FASTWNLL_CUDA:-0} "$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$WORK/dist" "$SDIST"
WHEEL=$(ls "$WORK"/dist/fastwnll-*.whl)
echo "== fresh environment with $(basename "$WHEEL")"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$PY" -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))" \
    > "$("$VPY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/dependencies.pth"
"$VPY" -m pip install -q --no-deps --force-reinstall "$WHEEL"
if "$VPY" -m pip check | grep "^fastwnll "; then echo "fastwnll's requirements are not met"; exit 1; fi
cp scripts/smoke_test.py "$WORK/"
(cd "$WORK" && TRITON_INTERPRET=1 "$VPY" smoke_test.py "$WORK/venv")
if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$SDIST" "$WHEEL" "$KEEP/"; fi
echo "wheel smoke test passed"
