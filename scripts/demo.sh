#!/usr/bin/env bash
# Set-up plus the main job: `fastwnll demo` (linear vs WNLL head on scikit-learn's digits, natural
# and under IFGSM). Extra arguments go to `fastwnll demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
"${PYTHON:-python3}" -m fastwnll demo "$@"
