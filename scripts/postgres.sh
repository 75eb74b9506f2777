#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests marked `postgres` (Debian's `postgresql`).
#   scripts/postgres.sh start   -> prints "URL DIR" (a database gapmodel_test on a free port)
#   scripts/postgres.sh stop DIR
set -euo pipefail
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[ -n "$PGBIN" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
as_owner() {  # run as the postgres user when root (initdb refuses root)
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "${1:-}" in
  start)
    DIR="$(mktemp -d /tmp/gapmodel-pg.XXXXXX)"
    [ "$(id -u)" = 0 ] && chown postgres "$DIR"
    PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    as_owner "$PGBIN/initdb" -D "$DIR/data" -A trust -U postgres >/dev/null
    as_owner "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w \
      -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1" start >/dev/null
    as_owner "$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres gapmodel_test
    echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/gapmodel_test $DIR"
    ;;
  stop)
    as_owner "$PGBIN/pg_ctl" -D "$2/data" -m fast -w stop >/dev/null || true
    rm -rf "$2"
    ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
