#!/usr/bin/env bash
# Predictions/s of N steward replicas on one PostgreSQL, against one replica
# (issue 19; docs/BENCHMARKS.md, "Replicas on one PostgreSQL").
#
# Usage:
#   scripts/replicas.sh [DURATION] [CONNECTIONS] [N ...]
#       defaults: 20s 64 1 3
#
# For each N: a fresh database on a throwaway PostgreSQL server (initdb +
# pg_ctl in a temp dir, on a free loopback port, durable commits: fsync on;
# run as the `postgres` user when this script runs as root), N release-build
# replicas on it, and one wrk per replica in parallel, the CONNECTIONS split
# evenly over them (bodies: datasets/penguins.csv, as scripts/load.sh sends).
# Then every replica is stopped with SIGTERM and the rows in `predictions` are
# compared with the 2xx answers wrk counted (plus at most the requests in
# flight when wrk stopped, which were answered but not counted).
#
# Environment: STEWARD_BIN=PATH runs that binary instead of building one;
# STEWARD_PG_BIN=DIR holds initdb and pg_ctl (default: Debian's newest
# /usr/lib/postgresql/*/bin); KEEP=1 keeps the temp directory.
#
# Exit status: 0 when every answer was 2xx and every answered prediction is
# stored; 1 otherwise; 2 on usage errors.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LUA="$ROOT/scripts/predict.lua"
CSV="$ROOT/datasets/penguins.csv"
DURATION="${1:-20s}"
CONNECTIONS="${2:-64}"
shift $(($# < 2 ? $# : 2))
COUNTS=("$@")
((${#COUNTS[@]})) || COUNTS=(1 3)

die() {
    echo "replicas.sh: error: $*" >&2
    exit 1
}
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || { echo "replicas.sh: CONNECTIONS must be a number" >&2; exit 2; }
command -v wrk >/dev/null || die "wrk is not installed (apt-get install wrk)"
command -v python3 >/dev/null || die "python3 is needed to pick ports"

PG_BIN="${STEWARD_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
[[ -x $PG_BIN/initdb ]] || die "no initdb in '$PG_BIN' (apt-get install postgresql)"
if [[ -n ${STEWARD_BIN:-} ]]; then
    BIN="$(realpath "$STEWARD_BIN")"
else
    echo "== building the release binary" >&2
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    BIN="$ROOT/target/release/steward"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/steward-replicas.XXXXXX")"
chmod 755 "$WORK"
AS=()
if [[ $(id -u) == 0 ]]; then
    AS=(runuser -u postgres --)
fi
mkdir -p "$WORK/pg"
[[ ${#AS[@]} == 0 ]] || chown postgres "$WORK/pg"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PG_PORT="$(free_port)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    "${AS[@]}" "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
    [[ ${KEEP:-0} == 1 ]] && echo "== kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
"${AS[@]}" "$PG_BIN/initdb" -D "$WORK/pg/data" -A trust -U postgres >/dev/null
"${AS[@]}" "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
    -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
psql_() { "${AS[@]}" "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc "$1" "${2:-postgres}"; }
echo "== PostgreSQL $(psql_ 'SHOW server_version') on 127.0.0.1:$PG_PORT (fsync $(psql_ 'SHOW fsync'))" >&2

status=0
declare -A RATE
for n in "${COUNTS[@]}"; do
    db="steward_$n"
    psql_ "CREATE DATABASE $db" >/dev/null
    url="postgres://postgres@127.0.0.1:$PG_PORT/$db"
    urls=()
    PIDS=()
    for i in $(seq 1 "$n"); do
        dir="$WORK/r$n-$i"
        mkdir -p "$dir"
        port="$(free_port)"
        (cd "$dir" && STEWARD_DATABASE__URL="$url" STEWARD_SERVER__LISTEN="127.0.0.1:$port" \
            STEWARD_LOG__FORMAT=json exec "$BIN" serve) >"$dir/steward.log" 2>&1 &
        PIDS+=($!)
        urls+=("http://127.0.0.1:$port")
        # The first replica makes the first model: the others start after it.
        deadline=$((SECONDS + 180))
        until curl -fsS --max-time 5 "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
            kill -0 "${PIDS[-1]}" 2>/dev/null || { tail -n 20 "$dir/steward.log" >&2; die "replica $i of $n exited"; }
            ((SECONDS < deadline)) || die "replica $i of $n not ready"
            sleep 0.25
        done
    done
    per=$(((CONNECTIONS + n - 1) / n))
    echo "== $n replica(s): wrk -t1 -c$per -d$DURATION on each" >&2
    outs=()
    loads=()
    for i in "${!urls[@]}"; do
        out="$WORK/wrk-$n-$i.txt"
        outs+=("$out")
        wrk -t1 -c"$per" -d"$DURATION" -s "$LUA" "${urls[$i]}/v1/predict" -- "$CSV" 1 >"$out" 2>&1 &
        loads+=($!)
    done
    for pid in "${loads[@]}"; do wait "$pid" || die "wrk failed"; done
    ok=0
    rate=0
    for out in "${outs[@]}"; do
        summary="$(grep '^steward-load:' "$out" | tail -n 1)"
        [[ -n $summary ]] || { cat "$out" >&2; die "wrk printed no summary"; }
        ok=$((ok + $(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<<"$summary")))
        rate="$(awk -v a="$rate" -v b="$(grep -oP 'Requests/sec:\s*\K[0-9.]+' "$out")" 'BEGIN { printf "%.0f", a + b }')"
        non="$(grep -oP 'Non-2xx or 3xx responses: \K[0-9]+' "$out" || echo 0)"
        ((non == 0)) || { echo "FAIL: $non answers were not 2xx ($out)" >&2; status=1; }
    done
    for pid in "${PIDS[@]}"; do kill -TERM "$pid"; done
    for pid in "${PIDS[@]}"; do wait "$pid" || { echo "FAIL: a replica exited uncleanly" >&2; status=1; }; done
    PIDS=()
    rows="$(psql_ 'SELECT COUNT(*) FROM predictions' "$db")"
    echo "$n replica(s): $rate predictions/s in all; $ok answered 2xx, $rows rows stored" >&2
    bytes="$(psql_ "SELECT pg_total_relation_size('predictions')" "$db")"
    echo "$n replica(s): predictions table with its indexes: $bytes bytes, $((bytes / (rows > 0 ? rows : 1))) per row" >&2
    # wrk stops at the deadline with up to $per requests per replica in
    # flight: those were answered and logged but not counted by wrk, so
    # ok <= rows <= ok + connections.
    if ((rows < ok)); then
        echo "FAIL: $((ok - rows)) answered predictions are missing" >&2
        status=1
    elif ((rows > ok + per * n)); then
        echo "FAIL: $((rows - ok)) more rows than answers (more than the requests in flight)" >&2
        status=1
    fi
    RATE[$n]=$rate
done
echo "============================================================"
for n in "${COUNTS[@]}"; do
    awk -v n="$n" -v r="${RATE[$n]}" -v one="${RATE[${COUNTS[0]}]}" \
        'BEGIN { printf "%d replica(s): %d predictions/s (%.2f x %d replica(s))\n", n, r, r / one, '"${COUNTS[0]}"' }'
done
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
exit "$status"
