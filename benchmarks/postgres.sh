#!/usr/bin/env bash
# A throwaway PostgreSQL server for the workload benchmarks' baseline (comb-bench workload
# --baseline postgres, comb-bench compare): Debian's postgresql, installed when missing, with
# its default durable settings (fsync, synchronous_commit), listening on a loopback port, in a
# data directory of its own that `stop` removes. Its max_connections is 300, not 100: the
# baseline opens one connection per client (and one more), so 128 clients fit. That setting
# costs a little shared memory and touches no durability.
#
#   benchmarks/postgres.sh start    # prints the URL comb-bench uses by default
#   benchmarks/postgres.sh stop
#   benchmarks/postgres.sh status
#
# COMB_BENCH_PG_PORT (default 54329) and COMB_BENCH_PG_DIR (default $TMPDIR/comb-bench-postgres)
# change where it runs.
set -euo pipefail

port="${COMB_BENCH_PG_PORT:-54329}"
dir="${COMB_BENCH_PG_DIR:-${TMPDIR:-/tmp}/comb-bench-postgres}"

sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi

bin_dir() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

install() {
    [ -n "$(bin_dir)" ] && return 0
    command -v apt-get >/dev/null 2>&1 || { echo "PostgreSQL is missing and this is not a Debian-like system: install PostgreSQL's server and retry" >&2; exit 1; }
    echo "installing postgresql (the benchmarks' baseline)" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
    [ -n "$(bin_dir)" ] || { echo "postgresql installed but its binaries were not found under /usr/lib/postgresql" >&2; exit 1; }
}

# PostgreSQL refuses to run as root: as root, run its tools as the postgres user.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
start)
    install
    bin="$(bin_dir)"
    if as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        echo "already running: postgresql://postgres@127.0.0.1:$port/postgres"
        exit 0
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log"
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null
    echo "postgresql://postgres@127.0.0.1:$port/postgres"
    ;;
stop)
    bin="$(bin_dir)"
    if [ -n "$bin" ] && [ -d "$dir/data" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
status)
    bin="$(bin_dir)"
    [ -n "$bin" ] && as_owner "$bin/pg_ctl" -D "$dir/data" status
    ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
