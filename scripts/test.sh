#!/usr/bin/env bash
# Set-up plus the test suite. Extra arguments go to pytest. CUDA tests skip without a GPU; Triton
# kernels are tested under TRITON_INTERPRET=1 by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
"${PYTHON:-python3}" -m pytest -q -rs "$@"   # -rs: say why each skipped test skipped
