#!/usr/bin/env bash
# The one command that sets up and runs the main job: builds matrixhostd,
# starts it in dev mode on loopback and shows it serving a homeserver.
#
#   MATRIXHOST_DEMO_PORT=8787  port to listen on
#   MATRIXHOST_DEMO_EXIT=1     stop after the demo instead of staying up
#                              (also the default when CI is set)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PORT="${MATRIXHOST_DEMO_PORT:-8787}"
BASE="http://127.0.0.1:$PORT"
STATE_DIR="$ROOT/.state/demo"
PID_FILE="$STATE_DIR/matrixhostd.pid"
LOG_FILE="$STATE_DIR/matrixhostd.log"
TOKEN_FILE="$STATE_DIR/dev-token"
SERVER_BIN="$ROOT/target/release/matrixhostd"

section() { printf '\n==== %s ====\n' "$*"; }
die() { printf '[demo] ERROR: %s\n' "$*" >&2; exit 1; }

# Stops a matrixhostd by pid: TERM, then KILL after 10 s.
stop_pid() {
    local pid="$1"
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "[demo] matrixhostd (pid $pid) ignored SIGTERM for 10 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

section "setup: tools"
bash scripts/setup.sh

export MATRIXHOST_TOOLS_DIR="$ROOT/.tools"
export PATH="$ROOT/.tools/bin:$PATH"
export CHECKPOINT_DISABLE=1

section "build: matrixhost-server (release)"
cargo build --release -p matrixhost-server
[[ -x "$SERVER_BIN" ]] || die "$SERVER_BIN was not built"

section "start: matrixhostd on $BASE"
mkdir -p "$STATE_DIR"
# A previous demo may still be up (e.g. its terminal was closed): stop it, but
# only if that pid really is a matrixhostd (pids get reused).
if [[ -f "$PID_FILE" ]]; then
    old_pid="$(cat "$PID_FILE")"
    old_cmd=""
    if [[ "$old_pid" =~ ^[0-9]+$ ]]; then
        old_cmd="$(tr '\0' ' ' <"/proc/$old_pid/cmdline" 2>/dev/null || true)"
    fi
    if [[ "$old_cmd" == *"matrixhostd serve"* ]]; then
        echo "stopping the previous demo matrixhostd (pid $old_pid)"
        stop_pid "$old_pid"
    fi
    rm -f "$PID_FILE"
fi
# Something else answering on the port would be mistaken for our server.
if curl -s -o /dev/null --max-time 2 "$BASE/healthz"; then
    die "something is already listening on $BASE; set MATRIXHOST_DEMO_PORT to another port"
fi

"$SERVER_BIN" serve --dev --state-dir "$STATE_DIR" --listen "127.0.0.1:$PORT" >"$LOG_FILE" 2>&1 &
SERVER_PID=$!
printf '%s\n' "$SERVER_PID" >"$PID_FILE"

WORK="$(mktemp -d)"
# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
    stop_pid "$SERVER_PID"
    # A newer demo run may have replaced us and written its own pid file.
    if [[ "$(cat "$PID_FILE" 2>/dev/null || true)" == "$SERVER_PID" ]]; then
        rm -f "$PID_FILE"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

healthy=0
for _ in $(seq 1 60); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/healthz" || true)" == "200" ]]; then
        healthy=1
        break
    fi
    sleep 0.5
done
if [[ "$healthy" -ne 1 ]]; then
    echo "---- last lines of $LOG_FILE ----" >&2
    tail -n 40 "$LOG_FILE" >&2 || true
    die "matrixhostd did not answer 200 on $BASE/healthz within 30 s"
fi
echo "matrixhostd is up (pid $SERVER_PID, log ${LOG_FILE#"$ROOT/"})"

[[ -s "$TOKEN_FILE" ]] || die "no dev token at $TOKEN_FILE"
# The token goes into a private header file rather than curl's command line,
# so it shows up neither in this output nor in the process list.
(
    umask 077
    printf 'Authorization: Bearer %s\n' "$(tr -d '[:space:]' <"$TOKEN_FILE")" >"$WORK/auth-header"
)

# api METHOD PATH [JSON_BODY]: prints the response body; fails on HTTP errors
# (showing the error body).
api() {
    local method="$1" path="$2"
    local args=(-sS --fail-with-body --max-time 30 -X "$method" -H "@$WORK/auth-header")
    if [[ $# -ge 3 ]]; then
        args+=(-H 'Content-Type: application/json' --data "$3")
    fi
    curl "${args[@]}" "$BASE$path"
}
pretty() { python3 -m json.tool; }
# json_get KEY.PATH: reads one field from the JSON document on stdin.
json_get() {
    python3 -c '
import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value[int(key)] if isinstance(value, list) else value[key]
print(value if not isinstance(value, (dict, list)) else json.dumps(value))
' "$1"
}

section "GET /v1/regions"
api GET /v1/regions | pretty

section "GET /v1/plans"
api GET /v1/plans | pretty

# (To be replaced by a `terraform apply` of an example configuration.)
section "homeserver 'demo'"
existing="$(api GET '/v1/homeservers?name=demo')"
count="$(python3 -c 'import json, sys; print(len(json.load(sys.stdin).get("items") or []))' <<<"$existing")"
if [[ "$count" -gt 0 ]]; then
    echo "homeserver 'demo' already exists (from an earlier run):"
    json_get items.0 <<<"$existing" | pretty
else
    echo "POST /v1/billing-plans"
    plan="$(api POST /v1/billing-plans '{"plan":"silver"}')"
    pretty <<<"$plan"
    plan_id="$(json_get id <<<"$plan")"

    echo "POST /v1/homeservers"
    body="$(python3 -c '
import json, sys
print(json.dumps({
    "name": "demo",
    "region": "us-east-1",
    "billing_plan_id": sys.argv[1],
    "volume": {"size_gb": 5, "encrypted": True},
    "data_controller": {"entity_name": "Demo Corp", "admin_email": "admin@demo.example"},
}))
' "$plan_id")"
    api POST /v1/homeservers "$body" | pretty
fi

section "waiting for the homeserver to run (real Synapse on an encrypted volume)"
hs_id="$(api GET '/v1/homeservers?name=demo' | json_get items.0.id)"
status=""
for _ in $(seq 1 240); do
    hs="$(api GET "/v1/homeservers/$hs_id")"
    status="$(json_get status <<<"$hs")"
    [[ "$status" == "running" || "$status" == "failed" ]] && break
    sleep 0.5
done
[[ "$status" == "running" ]] || die "homeserver demo is '$status': $(json_get status_reason <<<"$hs")"
client_url="$(json_get client_url <<<"$hs")"
server_name="$(json_get server_name <<<"$hs")"
echo "homeserver demo is running at $client_url ($server_name)"
curl -sS "$client_url/_matrix/client/versions" | pretty | head -n 8

# A reserved admin account to log in with; its password stays in a private file.
PASSWORD_FILE="$STATE_DIR/admin-password"
if [[ ! -s "$PASSWORD_FILE" ]]; then
    (umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(18))' >"$PASSWORD_FILE")
    api POST "/v1/homeservers/$hs_id/reserved-users" "$(python3 -c '
import json, sys
print(json.dumps({"email": "admin@demo.example", "localpart": "admin", "admin": True,
                  "initial_password": open(sys.argv[1]).read().strip()}))
' "$PASSWORD_FILE")" >/dev/null
fi
section "Matrix login as @admin:$server_name"
login_ok=0
for _ in $(seq 1 120); do
    code="$(python3 -c '
import json, sys
print(json.dumps({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "admin"},
                  "password": open(sys.argv[1]).read().strip()}))
' "$PASSWORD_FILE" | curl -s -o "$WORK/login.json" -w '%{http_code}' -H 'Content-Type: application/json' --data @- "$client_url/_matrix/client/v3/login" || true)"
    if [[ "$code" == "200" ]]; then login_ok=1; break; fi
    sleep 0.5
done
[[ "$login_ok" -eq 1 ]] || die "login as admin failed: $(cat "$WORK/login.json" 2>/dev/null)"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("logged in as", d["user_id"], "device", d["device_id"])' "$WORK/login.json"

section "matrixhostd is serving"
cat <<EOF
API:         $BASE
token file:  ${TOKEN_FILE#"$ROOT/"}
log:         ${LOG_FILE#"$ROOT/"}
try:         curl -H "Authorization: Bearer \$(cat ${TOKEN_FILE#"$ROOT/"})" $BASE/v1/homeservers
Matrix:      $client_url  user @admin:$server_name, password in ${PASSWORD_FILE#"$ROOT/"}
             (homeservers keep running when matrixhostd stops; the next start re-adopts them)
EOF

if [[ "${MATRIXHOST_DEMO_EXIT:-0}" == "1" || -n "${CI:-}" ]]; then
    echo "stopping matrixhostd (MATRIXHOST_DEMO_EXIT=1 or CI set)"
    exit 0
fi

echo "matrixhostd keeps running; press Ctrl-C to stop it."
# Background jobs of a script ignore SIGINT, so Ctrl-C reaches only this
# shell, whose EXIT trap then stops the server.
status=0
wait "$SERVER_PID" || status=$?
echo "matrixhostd exited with status $status; see ${LOG_FILE#"$ROOT/"}" >&2
exit "$status"
