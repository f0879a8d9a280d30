#!/usr/bin/env bash
# Runs the benchmarks and prints their reports (docs/benchmarks.md). Not part of the tests:
# numbers on a shared machine are noisy, so each benchmark compares its variants side by side
# in one run instead of asserting a time.
#
#   scripts/bench.sh                # every benchmark
#   scripts/bench.sh sandbox        # what the bubblewrap sandbox costs (R3)
#   scripts/bench.sh backup         # backup and restore throughput, daemon memory (R4)
#   scripts/bench.sh provider       # the Terraform provider against HashiCorp's Go null provider
#
# Knobs: MH_BENCH_HOMESERVERS, MH_BENCH_ROUNDS, MH_BENCH_REQUESTS (sandbox), MH_BENCH_DB_MB (backup),
# MH_BENCH_N, MH_BENCH_RUNS (provider).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
export PATH="$ROOT/.tools/bin:$PATH"
# Optimised binaries that keep the test hooks (the unsandboxed baseline is one).
export MATRIXHOST_BIN_PROFILE=bench-hooks
cargo build --workspace --bins --profile bench-hooks --features "matrixhost-server/test-hooks,matrixhost-agent/test-hooks"
# The provider as it ships (size and memory matter for it; see Cargo.toml).
cargo build -p terraform-provider-matrixhost --profile provider-release
export MATRIXHOST_PROVIDER_PROFILE=provider-release

benches=("$@")
if [[ ${#benches[@]} -eq 0 ]]; then
    benches=(sandbox backup provider)
fi
for bench in "${benches[@]}"; do
    printf '\n==== benchmark: %s ====\n' "$bench"
    cargo bench -p matrixhost-tests --bench "$bench"
done
