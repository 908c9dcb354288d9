#!/usr/bin/env bash
# The main job: builds the plugins and the node, generates a tiny llama
# checkpoint, and streams a completion from the sandboxed llama plugin.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-plugins.sh
exec ./target/release/infernet demo "$@"
