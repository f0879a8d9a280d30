#!/usr/bin/env bash
# The API contract test: schemathesis, in all its phases (examples, coverage, fuzzing and
# stateful, following the document's links), against the OpenAPI document that a real
# matrixhostd serves. It passes only with 0 failures and 0 errors.
#
# The server runs API-only (--no-runtime) on a random loopback port with a throwaway state
# dir, its rate limit raised so that the test measures the contract, not the limiter.
#
#   MH_CONTRACT_SEED=N     the generator's seed (default fixed, so a run can be replayed)
#   MH_CONTRACT_EXAMPLES=N examples per operation (default 100)
#
# Expects the tools and the debug build (scripts/test.sh makes both); run alone, it makes them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SCHEMATHESIS="$ROOT/.tools/contract-venv/bin/schemathesis"
SERVER_BIN="$ROOT/target/debug/matrixhostd"
[[ -x "$SCHEMATHESIS" ]] || bash scripts/setup.sh
[[ -x "$SERVER_BIN" ]] || cargo build -p matrixhost-server

STATE="$(mktemp -d /tmp/matrixhost-contract.XXXXXX)"
PID=""
cleanup() {
    [[ -n "$PID" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$STATE"
}
trap cleanup EXIT

# Stripe's webhook endpoint is on, with a throwaway signing secret, so its refusals are tested too.
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' | sed 's/^/whsec_/' >"$STATE/stripe-webhook-secret"
"$SERVER_BIN" serve --dev --no-runtime --state-dir "$STATE" --listen 127.0.0.1:0 \
    --rate-limit-per-second 100000 --rate-limit-burst 100000 \
    --stripe-webhook-secret-file "$STATE/stripe-webhook-secret" >"$STATE/matrixhostd.log" 2>&1 &
PID=$!
# The address it picked is in its log (it runs as the service user, which may not write into a
# root-made state dir's top level).
ADDR=""
for _ in $(seq 1 100); do
    ADDR="$(sed -n 's/.*matrixhostd listening addr=\([0-9.:]*\).*/\1/p' "$STATE/matrixhostd.log" | head -n 1)"
    [[ -n "$ADDR" && -s "$STATE/api/dev-token" ]] && break
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
done
[[ -n "$ADDR" ]] || { tail -n 30 "$STATE/matrixhostd.log" >&2; echo "contract: matrixhostd did not start" >&2; exit 1; }
BASE="http://$ADDR"
echo "contract: matrixhostd (API only) at $BASE"

# One worker: with more, CPython 3.11 can fail inside schemathesis's own generator (an AST
# recursion error in Hypothesis), which is the tool's trouble, not the API's.
status=0
(
    cd "$STATE"
    MATRIXHOST_CONTRACT_TOKEN="$(cat "$STATE/api/dev-token")"
    "$SCHEMATHESIS" run "$BASE/openapi.json" \
        --header "Authorization: Bearer $MATRIXHOST_CONTRACT_TOKEN" \
        --phases examples,coverage,fuzzing,stateful \
        --workers 1 \
        --seed "${MH_CONTRACT_SEED:-20261202}" \
        --max-examples "${MH_CONTRACT_EXAMPLES:-100}" \
        --no-color
) || status=$?
if [[ "$status" -ne 0 ]]; then
    echo "contract: schemathesis found contract failures or errors (exit $status); server log:" >&2
    tail -n 40 "$STATE/matrixhostd.log" >&2
fi
exit "$status"
