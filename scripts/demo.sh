#!/usr/bin/env bash
# The main job, end to end, as a customer does it: install the tools, build,
# start the node agent (root) and matrixhostd in dev mode (embedded SQLite, as
# the unprivileged `matrixhost` user) on loopback, install the Terraform
# provider into a project-local filesystem mirror, `terraform apply`
# examples/quickstart against matrixhostd, accept the admin's emailed
# invitation (from the dev Maildir) with a generated password, and log in to
# the new homeserver through the Matrix client API.
#
#   MATRIXHOST_DEMO_PORT=8787  port for matrixhostd
#   MATRIXHOST_DEMO_STRIPE_PORT=8788
#                              port for localstripe, the Stripe emulator that
#                              billing goes through (a test card pays)
#   MATRIXHOST_DEMO_EXIT=1     stop matrixhostd after the demo instead of
#                              staying up (also the default when CI is set)
#   MATRIXHOST_DEMO_ONBOARD=signup
#                              onboard a customer through the console instead
#                              of using the dev bootstrap's token: sign up,
#                              verify through the mailed link (read from the
#                              dev Maildir), log in and create an API token
#                              (scripts/onboard.py), then apply with it
#
# Reruns are idempotent: the state (matrixhostd's database, the Terraform state
# and the admin's chosen password) lives in .state/demo/, so a second run applies no
# changes and logs in to the same homeserver. Remove .state/demo/ to start over.
# Secrets (the API token, the admin password) are read from 0600 files into
# the environment of the commands that need them; they are never printed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PORT="${MATRIXHOST_DEMO_PORT:-8787}"
STRIPE_PORT="${MATRIXHOST_DEMO_STRIPE_PORT:-8788}"
STRIPE_URL="http://127.0.0.1:$STRIPE_PORT"
BASE="http://127.0.0.1:$PORT"
STATE_DIR="$ROOT/.state/demo"
PID_FILE="$STATE_DIR/matrixhostd.pid"
AGENT_PID_FILE="$STATE_DIR/matrixhost-agent.pid"
LOG_FILE="$STATE_DIR/matrixhostd.log"
AGENT_LOG_FILE="$STATE_DIR/matrixhost-agent.log"
TOKEN_FILE="$STATE_DIR/api/dev-token"
MIRROR="$STATE_DIR/terraform-mirror"
TF_RC="$STATE_DIR/terraform.rc"
ONBOARD="${MATRIXHOST_DEMO_ONBOARD:-dev}"
case "$ONBOARD" in
    dev)
        WORKDIR="$STATE_DIR/quickstart"
        ADMIN_EMAIL="admin@example.com"
        PASSWORD_FILE="$STATE_DIR/admin-password"
        ;;
    # Another organization: its own Terraform state and its own admin.
    signup)
        WORKDIR="$STATE_DIR/quickstart-signup"
        ADMIN_EMAIL="admin@customer.example"
        PASSWORD_FILE="$STATE_DIR/customer-admin-password"
        ;;
    *) printf '[demo] ERROR: MATRIXHOST_DEMO_ONBOARD must be dev or signup\n' >&2; exit 1 ;;
esac
EXAMPLE="$ROOT/examples/quickstart"
SERVER_BIN="$ROOT/target/release/matrixhostd"
AGENT_BIN="$ROOT/target/release/matrixhost-agent"
PROVIDER_BIN="$ROOT/target/provider-release/terraform-provider-matrixhost"
TERRAFORM="$ROOT/.tools/bin/terraform"

section() { printf '\n==== %s ====\n' "$*"; }
die() { printf '[demo] ERROR: %s\n' "$*" >&2; exit 1; }
rel() { printf '%s' "${1#"$ROOT/"}"; }

# Stops a process by pid: TERM, then KILL after 10 s.
stop_pid() {
    local pid="$1"
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "[demo] pid $pid ignored SIGTERM for 10 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

section "setup: tools"
bash scripts/setup.sh

export MATRIXHOST_TOOLS_DIR="$ROOT/.tools"
export CHECKPOINT_DISABLE=1
[[ -x "$TERRAFORM" ]] || die "$TERRAFORM is missing after scripts/setup.sh"

section "build: matrixhostd, matrixhost-agent and terraform-provider-matrixhost (release)"
# Release builds have no test hooks.
cargo build --release -p matrixhost-server -p matrixhost-agent
# The provider in the profile it ships in: smaller, and less memory in every Terraform run.
cargo build --profile provider-release -p terraform-provider-matrixhost
[[ -x "$SERVER_BIN" ]] || die "$SERVER_BIN was not built"
[[ -x "$AGENT_BIN" ]] || die "$AGENT_BIN was not built"
[[ -x "$PROVIDER_BIN" ]] || die "$PROVIDER_BIN was not built"

section "start: matrixhost-agent and matrixhostd --dev on $BASE"
mkdir -p "$STATE_DIR"
if [[ -f "$STATE_DIR/matrixhost.db" ]]; then
    die ".state/demo/ was made by a matrixhostd from before the node agent; remove .state/demo/ to start over"
fi
# A previous demo may still be up (e.g. its terminal was closed): stop it, but
# only if that pid really is ours (pids get reused).
stop_previous() { # stop_previous PIDFILE COMMAND-SUBSTRING
    local file="$1" what="$2" old_pid old_cmd=""
    [[ -f "$file" ]] || return 0
    old_pid="$(cat "$file")"
    if [[ "$old_pid" =~ ^[0-9]+$ ]]; then
        old_cmd="$(tr '\0' ' ' <"/proc/$old_pid/cmdline" 2>/dev/null || true)"
    fi
    if [[ "$old_cmd" == *"$what"* ]]; then
        echo "stopping the previous demo's $what (pid $old_pid)"
        stop_pid "$old_pid"
    fi
    rm -f "$file"
}
stop_previous "$PID_FILE" "matrixhostd serve"
stop_previous "$AGENT_PID_FILE" "matrixhost-agent"
# Something else answering on the port would be mistaken for our server.
if curl -s -o /dev/null --max-time 2 "$BASE/healthz"; then
    die "something is already listening on $BASE; set MATRIXHOST_DEMO_PORT to another port"
fi

# The node agent runs as root; matrixhostd starts as root and switches to the
# unprivileged `matrixhost` user before it opens anything.
"$AGENT_BIN" --state-dir "$STATE_DIR" --api-user matrixhost >"$AGENT_LOG_FILE" 2>&1 &
AGENT_PID=$!
printf '%s\n' "$AGENT_PID" >"$AGENT_PID_FILE"
for _ in $(seq 1 100); do
    [[ -S "$STATE_DIR/run/agent.sock" ]] && break
    kill -0 "$AGENT_PID" 2>/dev/null || break
    sleep 0.2
done
if [[ ! -S "$STATE_DIR/run/agent.sock" ]]; then
    echo "---- last lines of $(rel "$AGENT_LOG_FILE") ----" >&2
    tail -n 40 "$AGENT_LOG_FILE" >&2 || true
    die "matrixhost-agent did not start"
fi
echo "matrixhost-agent is up (pid $AGENT_PID, log $(rel "$AGENT_LOG_FILE"))"

section "start: localstripe (Stripe's API, emulated) on $STRIPE_URL"
stop_previous "$STATE_DIR/localstripe.pid" "localstripe"
if curl -s -o /dev/null --max-time 2 "$STRIPE_URL/js.stripe.com/v3/"; then
    die "something is already listening on $STRIPE_URL; set MATRIXHOST_DEMO_STRIPE_PORT to another port"
fi
# localstripe keeps its state in /tmp/localstripe.pickle, a fixed path; in a
# mount namespace of its own that path is .state/demo/localstripe.pickle, so the
# emulator's customers and subscriptions survive reruns as matrixhostd's do.
STRIPE_STATE="$STATE_DIR/localstripe.pickle"
FRESH=()
if [[ ! -s "$STRIPE_STATE" ]]; then
    : >"$STRIPE_STATE"
    FRESH=(--from-scratch)
fi
[[ -e /tmp/localstripe.pickle ]] || : >/tmp/localstripe.pickle # the mount point
unshare --mount --propagation private -- sh -c 'mount --bind "$1" /tmp/localstripe.pickle && shift && exec "$@"' sh \
    "$STRIPE_STATE" "$ROOT/.tools/bin/localstripe" --port "$STRIPE_PORT" "${FRESH[@]}" >"$STATE_DIR/localstripe.log" 2>&1 &
STRIPE_PID=$!
printf '%s\n' "$STRIPE_PID" >"$STATE_DIR/localstripe.pid"
for _ in $(seq 1 100); do
    curl -s -o /dev/null --max-time 1 "$STRIPE_URL/js.stripe.com/v3/" && break
    kill -0 "$STRIPE_PID" 2>/dev/null || die "localstripe did not start: $(tail -n 5 "$STATE_DIR/localstripe.log")"
    sleep 0.2
done
# The keys are the emulator's test keys; the secret ones live in 0600 files.
(
    umask 077
    printf 'sk_test_matrixhost_demo' >"$STATE_DIR/stripe-secret-key"
    [[ -s "$STATE_DIR/stripe-webhook-secret" ]] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' | sed 's/^/whsec_/' >"$STATE_DIR/stripe-webhook-secret"
)
chown matrixhost "$STATE_DIR/stripe-secret-key" "$STATE_DIR/stripe-webhook-secret" 2>/dev/null || true

"$SERVER_BIN" serve --dev --state-dir "$STATE_DIR" --listen "127.0.0.1:$PORT" \
    --stripe-api-url "$STRIPE_URL" --stripe-secret-key-file "$STATE_DIR/stripe-secret-key" \
    --stripe-publishable-key pk_test_matrixhost_demo --stripe-webhook-secret-file "$STATE_DIR/stripe-webhook-secret" \
    >"$LOG_FILE" 2>&1 &
SERVER_PID=$!
printf '%s\n' "$SERVER_PID" >"$PID_FILE"

WORK="$(mktemp -d)"
# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
    stop_pid "$SERVER_PID"
    stop_pid "$AGENT_PID"
    stop_pid "$STRIPE_PID"
    if [[ "$(cat "$STATE_DIR/localstripe.pid" 2>/dev/null || true)" == "$STRIPE_PID" ]]; then
        rm -f "$STATE_DIR/localstripe.pid"
    fi
    # A newer demo run may have replaced us and written its own pid files.
    if [[ "$(cat "$PID_FILE" 2>/dev/null || true)" == "$SERVER_PID" ]]; then
        rm -f "$PID_FILE"
    fi
    if [[ "$(cat "$AGENT_PID_FILE" 2>/dev/null || true)" == "$AGENT_PID" ]]; then
        rm -f "$AGENT_PID_FILE"
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
    echo "---- last lines of $(rel "$LOG_FILE") ----" >&2
    tail -n 40 "$LOG_FILE" >&2 || true
    die "matrixhostd did not answer 200 on $BASE/healthz within 30 s"
fi
echo "matrixhostd is up (pid $SERVER_PID, user $(ps -o user= -p "$SERVER_PID" | tr -d ' '), log $(rel "$LOG_FILE"))"
[[ -s "$TOKEN_FILE" ]] || die "no dev token at $(rel "$TOKEN_FILE")"
echo "console: $BASE/console (mail goes to $(rel "$STATE_DIR/api/maildir"))"
# Stripe delivers its events (a paid or failed invoice) to matrixhostd's webhook.
curl -s -o /dev/null --fail -X POST "$STRIPE_URL/_config/webhooks/matrixhost" \
    --data-urlencode "url=$BASE/v1/stripe/webhook" --data-urlencode "secret@$STATE_DIR/stripe-webhook-secret" \
    || die "could not register matrixhostd's webhook with localstripe"
echo "billing: through localstripe at $STRIPE_URL (webhook registered)"

if [[ "$ONBOARD" == "signup" ]]; then
    section "onboard: a customer signs up through the console"
    python3 "$ROOT/scripts/onboard.py" --console "$BASE" --maildir "$STATE_DIR/api/maildir" \
        --email "it@customer.example" --organization "customer" \
        --password-file "$STATE_DIR/customer-password" --token-file "$STATE_DIR/customer-token"
    TOKEN_FILE="$STATE_DIR/customer-token"
fi

section "install: the provider into the filesystem mirror $(rel "$MIRROR")"
VERSION="$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "terraform-provider-matrixhost"))
')"
case "$(uname -m)" in
    x86_64 | amd64) ARCH=amd64 ;;
    aarch64 | arm64) ARCH=arm64 ;;
    *) die "unsupported architecture $(uname -m)" ;;
esac
PLATFORM_DIR="$MIRROR/terraform.local/matrixhost/matrixhost/$VERSION/linux_$ARCH"
mkdir -p "$PLATFORM_DIR"
install -m 0755 "$PROVIDER_BIN" "$PLATFORM_DIR/terraform-provider-matrixhost_v$VERSION"
cat >"$TF_RC" <<EOF
provider_installation {
  filesystem_mirror {
    path    = "$MIRROR"
    include = ["terraform.local/*/*"]
  }
  direct {
    exclude = ["terraform.local/*/*"]
  }
}
EOF
echo "terraform.local/matrixhost/matrixhost $VERSION (linux_$ARCH); CLI config $(rel "$TF_RC")"

section "terraform: examples/quickstart"
# The admin chooses a password through the emailed invitation (below); an
# earlier run's choice is in a private file.
if [[ ! -s "$PASSWORD_FILE" && -s "$WORKDIR/terraform.tfstate" ]] && grep -q '"matrixhost_reserved_user"' "$WORKDIR/terraform.tfstate"; then
    die "$(rel "$PASSWORD_FILE") is gone but the admin account exists; remove .state/demo/ to start over"
fi
# Terraform works in a copy of the example, so that its state, lock file and
# .terraform/ stay under .state/ and the example directory stays clean.
mkdir -p "$WORKDIR"
chmod 700 "$WORKDIR"
rm -f "$WORKDIR"/*.tf
cp "$EXAMPLE"/*.tf "$WORKDIR"/
echo "working directory: $(rel "$WORKDIR") (a copy of examples/quickstart)"

# The card a customer would type into the console's Stripe.js form; here made
# through the emulator's API with Stripe's test number. Only its id reaches
# Terraform and matrixhost (R13).
# A rerun reuses the first run's card, so it plans no change.
if [[ ! -s "$STATE_DIR/payment-method" ]]; then
    curl -s --fail -u sk_test_matrixhost_demo: "$STRIPE_URL/v1/payment_methods" \
        -d type=card -d 'card[number]=4242424242424242' -d 'card[exp_month]=12' -d 'card[exp_year]=2034' -d 'card[cvc]=123' \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' >"$STATE_DIR/payment-method" \
        || die "localstripe made no payment method"
fi
PAYMENT_METHOD="$(cat "$STATE_DIR/payment-method")"

# tf ARGS...: runs Terraform 1.0.3 in the working directory with the
# mirror, the endpoint and, from its file, the token.
tf() {
    (
        cd "$WORKDIR"
        TF_CLI_CONFIG_FILE="$TF_RC" TF_IN_AUTOMATION=1 TF_INPUT=0 \
            MATRIXHOST_ENDPOINT="$BASE" \
            MATRIXHOST_TOKEN="$(tr -d '[:space:]' <"$TOKEN_FILE")" \
            TF_VAR_admin_email="$ADMIN_EMAIL" \
            TF_VAR_payment_method_id="$PAYMENT_METHOD" \
            "$TERRAFORM" "$@"
    )
}

# A rebuilt provider has a new checksum, which Terraform 1.0 refuses against the old lock file
# even with -upgrade; the lock is the demo's own (the mirror holds the one build), so start anew.
rm -f "$WORKDIR/.terraform.lock.hcl"
tf init -input=false -upgrade -no-color
tf apply -auto-approve -input=false -no-color

client_url="$(tf output -raw client_url)"
server_name="$(tf output -raw server_name)"
admin_user_id="$(tf output -raw admin_user_id)"
[[ -n "$client_url" ]] || die "the quickstart has no client_url"
echo "homeserver $server_name is running at $client_url"

section "invitation: $ADMIN_EMAIL chooses the admin password"
# No password passed through Terraform: the admin follows the one-time link
# mailed to them (here from the dev Maildir) and chooses one.
python3 "$ROOT/scripts/accept_invite.py" --console "$BASE" --maildir "$STATE_DIR/api/maildir" \
    --email "$ADMIN_EMAIL" --password-file "$PASSWORD_FILE"

section "Matrix login as $admin_user_id"
# The account exists when the apply returns. The password goes to Python from
# its file and the access token is never printed.
python3 - "$client_url" "$PASSWORD_FILE" "$WORK/login.json" <<'PY' || die "login as admin failed: $(cat "$WORK/login.json" 2>/dev/null)"
import json, sys, time, urllib.error, urllib.request

client_url, password_file, out = sys.argv[1:4]
password = open(password_file).read().strip()
body = json.dumps({
    "type": "m.login.password",
    "identifier": {"type": "m.id.user", "user": "admin"},
    "password": password,
    "initial_device_display_name": "matrixhost demo",
}).encode()
deadline = time.time() + 180
last = ""
while time.time() < deadline:
    req = urllib.request.Request(client_url + "/_matrix/client/v3/login", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            result = json.load(resp)
            print("POST /_matrix/client/v3/login -> HTTP", resp.status)
            print("logged in as", result["user_id"], "on", result.get("home_server", "?"),
                  "with device", result["device_id"], "(access token not shown)")
            sys.exit(0)
    except urllib.error.HTTPError as e:
        last = "HTTP %d %s" % (e.code, e.read().decode(errors="replace"))
    except (urllib.error.URLError, OSError) as e:
        last = str(e)
    time.sleep(1)
open(out, "w").write(last)
sys.exit(1)
PY
echo "GET /_matrix/client/versions:"
curl -sS --max-time 10 "$client_url/_matrix/client/versions" | python3 -c '
import json, sys
print("  Matrix spec versions", ", ".join(json.load(sys.stdin)["versions"][-3:]), "...")' || true

section "your homeserver"
cat <<EOF
Matrix client:  open any Matrix client (e.g. Element), choose "Sign in" with a custom
                homeserver $client_url
                user:     admin   ($admin_user_id)
                password: in $(rel "$PASSWORD_FILE")
Terraform:      the quickstart's state is in $(rel "$WORKDIR"); to plan or change it:
                  export TF_CLI_CONFIG_FILE=$TF_RC
                  export MATRIXHOST_ENDPOINT=$BASE
                  export MATRIXHOST_TOKEN="\$(cat $TOKEN_FILE)"
                  cd $WORKDIR && $TERRAFORM plan
API:            $BASE   (token in $(rel "$TOKEN_FILE"), log in $(rel "$LOG_FILE"))
Console:        $BASE/console   (sign up, tokens, billing, data export; mail in $(rel "$STATE_DIR/api/maildir"))
Guides:         docs/guides/getting-started.md, docs/guides/enterprise-onboarding.md
                (homeservers keep running when matrixhostd or the agent stops; the
                agent finds them again in their cgroups when it starts)
EOF

if [[ "${MATRIXHOST_DEMO_EXIT:-0}" == "1" || -n "${CI:-}" ]]; then
    echo "stopping matrixhostd and the agent (MATRIXHOST_DEMO_EXIT=1 or CI set)"
    exit 0
fi

echo "matrixhostd keeps running; press Ctrl-C to stop it."
# Background jobs of a script ignore SIGINT, so Ctrl-C reaches only this
# shell, whose EXIT trap then stops the server.
status=0
wait "$SERVER_PID" || status=$?
echo "matrixhostd exited with status $status; see $(rel "$LOG_FILE")" >&2
exit "$status"
