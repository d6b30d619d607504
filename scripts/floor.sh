#!/usr/bin/env bash
# steward's predictions/s as a share of the machine's floor: the same wrk load
# (scripts/predict.lua, the penguins rows as single-instance bodies) against a
# bare axum handler (examples/floor.rs: parse the body, answer steward's shape,
# nothing else) and against `steward serve` with logging on (scripts/load.sh
# --start, which also checks that every answered prediction is in the
# database), alternating, RUNS times.
#
# Usage:
#   scripts/floor.sh [DURATION] [CONNECTIONS]      defaults: 10s 64
#
# Environment: RUNS (default 3), THREADS (wrk threads, default 2).
# Prints one line per run and the ratio of each pair; exits 1 when a load run
# fails (non-2xx answers, rows missing from the database).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${1:-10s}"
CONNECTIONS="${2:-64}"
RUNS="${RUNS:-3}"
THREADS="${THREADS:-2}"

die() {
    echo "floor.sh: error: $*" >&2
    exit 1
}

command -v wrk >/dev/null || die "wrk is not installed (apt-get install wrk)"
echo "== building steward and the bare handler (release)" >&2
(cd "$ROOT" && cargo build --release --quiet --bin steward --example floor) ||
    die "cargo build --release failed"
FLOOR_BIN="$ROOT/target/release/examples/floor"

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$FLOOR_BIN" "127.0.0.1:$PORT" >/dev/null &
FLOOR_PID=$!
trap 'kill "$FLOOR_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 40); do
    curl -fsS -o /dev/null -X POST -H 'content-type: application/json' \
        -d '{"features":{}}' "http://127.0.0.1:$PORT/v1/predict" 2>/dev/null && break
    sleep 0.25
done

rate() { grep -oP 'Requests/sec:\s*\K[0-9.]+' <<<"$1"; }
p99() { grep -oP '^\s*99%\s*\K\S+' <<<"$1"; }
# CPU seconds the floor process has used (user + system, from /proc).
floor_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$FLOOR_PID/stat"; }

# req/s is what the goal is stated in. CPU per request (the server's own, every
# thread) is the steadier figure when something else shares the cores: the
# cpu_ratio column is floor CPU / steward CPU per request.
echo "run,floor_req_s,floor_p99,steward_req_s,steward_p99,ratio,floor_cpu_us,steward_cpu_us,cpu_ratio"
for run in $(seq 1 "$RUNS"); do
    cpu0="$(floor_cpu)"
    floor="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
        -s "$ROOT/scripts/predict.lua" "http://127.0.0.1:$PORT/v1/predict" -- "$ROOT/datasets/penguins.csv")"
    cpu1="$(floor_cpu)"
    fcpu="$(python3 -c "print(f'{($cpu1 - $cpu0) * 1e6 / $(grep -oP '^\s*\K[0-9]+(?= requests in)' <<<"$floor"):.2f}')")"
    # The floor idles while steward runs: it holds no CPU.
    steward="$(STEWARD_BIN="$ROOT/target/release/steward" THREADS="$THREADS" \
        "$ROOT/scripts/load.sh" --start "$DURATION" "$CONNECTIONS" 2>/dev/null)" ||
        die "the steward run failed: $(tail -n 5 <<<"$steward")"
    f="$(rate "$floor")"
    s="$(rate "$steward")"
    scpu="$(grep -oP '^daemon CPU:\s*\K[0-9.]+' <<<"$steward")"
    echo "$run,$f,$(p99 "$floor"),$s,$(p99 "$steward"),$(python3 -c "print(f'{$s / $f:.3f}')")," \
        "$fcpu,$scpu,$(python3 -c "print(f'{$fcpu / $scpu:.3f}')")" | tr -d ' '

done
