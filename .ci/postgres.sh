#!/usr/bin/env bash
# A throw-away PostgreSQL server on 127.0.0.1 for the storage tests (PROVERBOT_TEST_POSTGRES_URL).
#
#   .ci/postgres.sh start DIR   create a cluster in DIR (an empty directory, e.g. from `mktemp -d`), start it and
#                               print its URL, postgresql+asyncpg://proverbot_test@127.0.0.1:54329/proverbot_test
#   .ci/postgres.sh stop DIR    stop that server if it runs, delete what start put in DIR and DIR itself if empty
#
# The server listens on 127.0.0.1 only (port PROVERBOT_PG_PORT, default 54329) and on a Unix socket in DIR, trusts
# local and 127.0.0.1 connections, and has a role and a database named proverbot_test. Its data is thrown away, so
# fsync is off. Run as root, the server runs as the `postgres` system user, and with CI=true Debian's postgresql
# package is installed first when no PostgreSQL server is found. Messages go to stderr. start fails (non-zero exit
# status) when it cannot provide a server; `stop DIR` cleans up after it all the same.
set -euo pipefail

PORT=${PROVERBOT_PG_PORT:-54329}
NAME=proverbot_test

log() { echo "postgres.sh: $*" >&2; }

bindir() {  # the folder of initdb and pg_ctl, or nothing
    if command -v initdb >/dev/null; then
        dirname "$(readlink -f "$(command -v initdb)")"
    else
        ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 | xargs -r dirname || true
    fi
}

as_server_user() {  # runs a server program as `postgres` when we are root (PostgreSQL refuses to run as root)
    if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install_postgres() {
    log "no PostgreSQL server installed: apt-get install postgresql"
    local t0=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    apt-get -qq -o Acquire::http::Timeout=30 update >&2
    apt-get -qq -o Acquire::http::Timeout=30 install -y --no-install-recommends postgresql >&2
    log "installed in $((SECONDS - t0)) s"
}

start() {
    local dir bin t0=$SECONDS
    dir=$(cd "$1" && pwd)
    bin=$(bindir)
    if [[ -z $bin && $EUID -eq 0 && ${CI:-} == true ]]; then
        install_postgres
        bin=$(bindir)
    fi
    if [[ -z $bin ]]; then
        log "no PostgreSQL server found (initdb, pg_ctl); on Debian: apt-get install postgresql"
        return 1
    fi
    if [[ $EUID -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
        chown postgres: "$dir"
    fi
    cd "$dir"  # a folder the server user may enter

    as_server_user "$bin/initdb" --pgdata="$dir/data" --username=postgres --auth=trust \
        --encoding=UTF8 --locale=C --no-sync >/dev/null
    cat >"$dir/data/pg_hba.conf" <<EOF
local all all              trust
host  all all 127.0.0.1/32 trust
EOF
    cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    if ! as_server_user "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait --timeout=60 \
        start >/dev/null; then
        log "the server did not start; the end of its log:"
        tail -n 20 "$dir/server.log" >&2 || true
        return 1
    fi
    "$bin/createuser" --host="$dir" --port="$PORT" --username=postgres --createdb "$NAME"
    "$bin/createdb" --host="$dir" --port="$PORT" --username=postgres --owner="$NAME" "$NAME"
    log "PostgreSQL $(cat "$dir/data/PG_VERSION") on 127.0.0.1:$PORT, started in $((SECONDS - t0)) s"
    echo "postgresql+asyncpg://$NAME@127.0.0.1:$PORT/$NAME"
}

stop() {
    local dir=$1 bin
    [[ -d $dir ]] || return 0
    dir=$(cd "$dir" && pwd)
    cd "$dir"
    bin=$(bindir)
    if [[ -n $bin && -f $dir/data/postmaster.pid ]] &&
        as_server_user "$bin/pg_ctl" --pgdata="$dir/data" status >/dev/null; then
        as_server_user "$bin/pg_ctl" --pgdata="$dir/data" --mode=fast --wait stop >/dev/null ||
            as_server_user "$bin/pg_ctl" --pgdata="$dir/data" --mode=immediate --wait stop >/dev/null
        log "stopped the server"
    fi
    cd /
    rm -rf "$dir/data" "$dir/server.log"
    rmdir "$dir" 2>/dev/null || true
}

if [[ $# -ne 2 || ($1 != start && $1 != stop) ]]; then
    echo "usage: $0 start|stop DIR" >&2
    exit 2
fi
"$1" "$2"
