#!/usr/bin/env bash
# A throw-away PostgreSQL server for the library tests (tests/test_library.py).
#   scripts/pg-test-server.sh start DIR   install Debian's postgresql when missing, initdb in DIR, start the
#                                         server (Unix socket in DIR only, no TCP port to collide with),
#                                         create database designs_test; prints BACKEND_TEST_POSTGRES_URL
#   scripts/pg-test-server.sh stop DIR    stop that server and delete DIR
# As root the server runs as the `postgres` user (initdb refuses root); otherwise as the caller.
set -euo pipefail
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

bindir() {  # the newest installed server's bin folder (Debian keeps them out of PATH)
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

as_owner() {  # run a server binary as the data folder's owner
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case $cmd in
start)
  if [ -z "$(bindir)" ]; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "pg-test-server: installing postgresql (apt)" >&2
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  fi
  bin=$(bindir)
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  # trust: the socket lives in a private folder of this run; nothing else can reach it.
  as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c fsync=off" start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  as_owner "$bin/createdb" -h "$dir" -U postgres designs_test
  echo "postgresql+psycopg://postgres@/designs_test?host=$dir"
  ;;
stop)
  bin=$(bindir)
  if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
  fi
  rm -rf "$dir"
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2; exit 2
  ;;
esac
