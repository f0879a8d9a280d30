#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the tests.
#
#   scripts/pg-test.sh start   fresh cluster on a free port, prints its URL
#   scripts/pg-test.sh stop    stops it and deletes its data (no-op if none)
#   scripts/pg-test.sh url     prints the URL of the running one
#
# The cluster lives in a mktemp dir under /tmp (recorded in .tools/pg/current):
# as root it must run as an unprivileged user, and that user may not be able
# to traverse the path of the work tree, but it can always reach /tmp.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/.tools/pg"
CURRENT="$STATE/current"
URL_FILE="$STATE/url"
DB_NAME="matrixhost_test"
PG_USER="matrixhost-pg"

die() { printf '[pg-test] ERROR: %s\n' "$*" >&2; exit 1; }

find_pg_bin() {
    local bin
    # shellcheck disable=SC2012 # version-sorted dir names, no odd characters
    bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
    [[ -n "$bin" && -x "$bin/pg_ctl" ]] ||
        die "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (run scripts/setup.sh)"
    printf '%s\n' "$bin"
}

# PostgreSQL refuses to run as root, so as root the server runs as a system
# user of its own; otherwise as whoever we are.
RUN_AS=()
if [[ "$(id -u)" -eq 0 ]]; then
    RUN_AS=(runuser -u "$PG_USER" --)
fi

ensure_pg_user() {
    [[ "$(id -u)" -eq 0 ]] || return 0
    if ! id -u "$PG_USER" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

cmd_stop() {
    local dir pg_bin
    [[ -f "$CURRENT" ]] || { rm -f "$URL_FILE"; return 0; }
    dir="$(cat "$CURRENT")"
    # Only ever delete what this script made.
    case "$dir" in
        /tmp/matrixhost-pg.*) ;;
        *) die "refusing to remove unexpected data dir '$dir' named in $CURRENT" ;;
    esac
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        pg_bin="$(find_pg_bin)"
        cd /
        "${RUN_AS[@]}" "$pg_bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    rm -f "$CURRENT" "$URL_FILE"
    echo "[pg-test] stopped"
}

cmd_start() {
    local pg_bin dir port url attempt started=0
    pg_bin="$(find_pg_bin)"
    cmd_stop >/dev/null # fresh every time
    mkdir -p "$STATE"
    ensure_pg_user

    dir="$(mktemp -d /tmp/matrixhost-pg.XXXXXX)"
    printf '%s\n' "$dir" >"$CURRENT"
    mkdir -p "$dir/sock"
    if [[ "$(id -u)" -eq 0 ]]; then
        chown -R "$PG_USER:" "$dir"
    fi
    # The server user may not be allowed into the caller's working directory.
    cd "$dir"

    # trust auth: loopback only, throwaway data. --no-sync: nothing to keep.
    "${RUN_AS[@]}" "$pg_bin/initdb" -D "$dir/data" -A trust -U postgres \
        -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; die "initdb failed"; }

    # The free port is only free until someone else takes it: retry a few
    # times with a new one. Durability is off since the data is disposable,
    # and max_connections is raised for tests that each open a pool.
    for attempt in 1 2 3; do
        port="$(free_port)"
        if "${RUN_AS[@]}" "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 \
            -o "-p $port -h 127.0.0.1 -k $dir/sock -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
            start >/dev/null; then
            started=1
            break
        fi
        echo "[pg-test] start on port $port failed (attempt $attempt), retrying" >&2
    done
    if [[ "$started" -ne 1 ]]; then
        tail -n 30 "$dir/postgres.log" >&2 || true
        die "could not start PostgreSQL"
    fi

    "$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$DB_NAME"
    url="postgres://postgres@127.0.0.1:$port/$DB_NAME"
    [[ "$("$pg_bin/psql" "$url" -XAtqc 'select 1')" == "1" ]] || die "server does not answer at $url"
    printf '%s\n' "$url" >"$URL_FILE"
    printf '%s\n' "$url"
}

cmd_url() {
    [[ -f "$URL_FILE" ]] || die "no test PostgreSQL running (scripts/pg-test.sh start)"
    cat "$URL_FILE"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    url) cmd_url ;;
    *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
