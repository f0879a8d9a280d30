#!/usr/bin/env bash
# The one command that sets up and runs every test; CI runs it via .ci/run.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -p matrixhost-server).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

section() { printf '\n==== %s ====\n' "$*"; }

section "setup: tools"
bash scripts/setup.sh

section "setup: test PostgreSQL"
# Always stop the throwaway server, whatever way this script ends.
trap 'bash "$ROOT/scripts/pg-test.sh" stop >/dev/null 2>&1 || true' EXIT
PG_URL="$(bash scripts/pg-test.sh start)"
echo "PostgreSQL for tests: $PG_URL"

export MATRIXHOST_TEST_POSTGRES_URL="$PG_URL"
export MATRIXHOST_TOOLS_DIR="$ROOT/.tools"
export PATH="$ROOT/.tools/bin:$PATH"
# Terraform's upgrade check would call out to a host this network can't reach.
export CHECKPOINT_DISABLE=1
# Some machines point TF_CLI_CONFIG_FILE at a file that doesn't exist, which
# makes every terraform run print a warning; drop it in that case.
if [[ -n "${TF_CLI_CONFIG_FILE:-}" && ! -f "$TF_CLI_CONFIG_FILE" ]]; then
    unset TF_CLI_CONFIG_FILE
fi

# A one-shot CI build gains nothing from incremental state, which would take gigabytes more disk.
if [[ -n "${CI:-}" ]]; then
    export CARGO_INCREMENTAL=0
fi
echo "free disk for the build: $(df -h --output=avail "$ROOT" | tail -1 | tr -d ' ')"

# --locked once a lock file is committed, so CI never silently re-resolves.
locked=()
if [[ -f Cargo.lock ]]; then
    locked=(--locked)
fi

# Test builds have the test hooks (the adjustable clock, injected faults, the
# unsandboxed benchmark baseline); release builds never do.
features=(--features "matrixhost-server/test-hooks,matrixhost-agent/test-hooks")

build=(cargo build --workspace "${locked[@]}" "${features[@]}")
section "${build[*]}"
"${build[@]}"

status=0
if [[ $# -eq 0 ]]; then
    # The release shape: without the feature, the test hooks are refused by name.
    release=(cargo test "${locked[@]}" -p matrixhost-server -p matrixhost-agent --lib -- release_build only_test_builds)
    section "${release[*]}"
    "${release[@]}" || status=$?
fi

tests=(cargo test --workspace --no-fail-fast "${locked[@]}" "${features[@]}" "$@")
section "${tests[*]}"
"${tests[@]}" || status=$?

# The API contract: schemathesis against the OpenAPI document the real server serves.
if [[ $# -eq 0 ]]; then
    section "contract: schemathesis against the served OpenAPI document (scripts/contract.sh)"
    bash scripts/contract.sh || status=$?
fi

# The acceptance tests ran on the project's Terraform 1.0.3. When the machine has its own
# `terraform` (not the project's), they run again on it.
system_terraform() {
    local dir
    IFS=: read -r -a dirs <<<"$PATH"
    for dir in "${dirs[@]}"; do
        [[ "$dir" == "$ROOT/.tools/bin" ]] && continue
        if [[ -x "$dir/terraform" ]]; then
            printf '%s\n' "$dir/terraform"
            return 0
        fi
    done
    return 1
}
if [[ $# -eq 0 ]] && other="$(system_terraform)"; then
    acceptance=()
    for t in tests/tests/acceptance_*.rs; do
        acceptance+=(--test "$(basename "$t" .rs)")
    done
    again=(cargo test --workspace --no-fail-fast "${locked[@]}" "${features[@]}" "${acceptance[@]}")
    section "again on $("$other" version | head -1) ($other): ${again[*]}"
    MATRIXHOST_TERRAFORM_BIN="$other" "${again[@]}" || status=$?
fi

section "done: cargo test exited with $status"
exit "$status"
