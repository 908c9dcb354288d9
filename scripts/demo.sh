#!/usr/bin/env bash
# The main job: builds the plugins and the node, generates a tiny llama
# checkpoint, brings up three providers and a client on 127.0.0.1 (each its
# own swarm and SQLite file), and streams a paid job across the network:
# the client funds its local ledger, escrows the cheapest quote, runs it
# on two providers (replicate(2)), compares their kernel traces, and
# releases the escrows after the verdict; a spot check is re-run by a
# verifier node, paid like a replica, which attests the provider. Then a
# cheating build of the llama plugin is disputed before a referee, and the
# stake an arbiter holds for it is slashed. Last, the model is split over
# two providers that hold one layer each, and a paid generation runs
# through that pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-plugins.sh
exec ./target/release/infernet demo "$@"
