#!/usr/bin/env bash
# Builds the first-party plugins for wasm32-wasip2 and packs each into
# target/plugins/<name>/ (the .wasm plus infernet-plugin.toml with its sha256).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml \
  --workspace --exclude infernet-plugin-cheat-llama
# Test-only cheating llama backends (plugins/cheat-llama), one build per cheat;
# each build writes the same .wasm, so each is copied to its own name.
cheats="perturb skip-layers replay early-stop session-lie"
release=plugins/target/wasm32-wasip2/release
for mode in $cheats; do
  cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml \
    -p infernet-plugin-cheat-llama --no-default-features --features "$mode"
  cp "$release/infernet_plugin_cheat_llama.wasm" "$release/cheat-$mode.wasm"
done
cargo build --release -p infernet-host --bin infernet
for p in llama bert mlp pricing-flat pricing-surge hostile echo payment-ledger payment-coinpay engine-openai; do
  ./target/release/infernet plugin pack \
    "plugins/target/wasm32-wasip2/release/infernet_plugin_${p//-/_}.wasm" \
    --out "target/plugins/$p" --name "$p" --version 0.1.0 >/dev/null
done
# Named `llama`: their manifests claim to be the honest backend.
for mode in $cheats; do
  ./target/release/infernet plugin pack "$release/cheat-$mode.wasm" \
    --out "target/plugins/cheat-$mode" --name llama --version 0.1.0 >/dev/null
done
echo "plugins packed into target/plugins/"
