#!/usr/bin/env bash
# Load test of steward's POST /v1/predict with wrk.
#
# Usage:
#   scripts/load.sh [URL] [DURATION] [CONNECTIONS]
#       against a running daemon; defaults: http://127.0.0.1:8080 30s 64
#   scripts/load.sh --start [DURATION] [CONNECTIONS]
#       build the release binary, start `steward serve` in a temp directory (fresh
#       SQLite file, first model trained from the bundled data, a free port), run
#       the load, stop the daemon with SIGTERM, and compare the rows in its
#       predictions table with the requests wrk saw answered.
#
# Environment: THREADS (wrk threads, default 2), BATCH (instances per request,
# default 1: `{"features"}` bodies; N > 1: `{"instances"}` bodies of N rows, and
# the row check counts N rows per answer), KEEP=1 keeps the temp directory
# of --start (database, config, daemon log), STEWARD_BIN=PATH makes --start run
# that binary instead of building one (to compare two builds).
#
# The bodies are the rows of datasets/penguins.csv (see scripts/predict.lua), so
# the traffic includes missing values (null) as real clients send them.
#
# Exit status: 0 when every response was 2xx (and, with --start, every answered
# prediction is in the database and the daemon stopped cleanly); 1 otherwise or
# when the daemon is not reachable/ready; 2 on usage errors.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LUA="$ROOT/scripts/predict.lua"
CSV="$ROOT/datasets/penguins.csv"
THREADS="${THREADS:-2}"
BATCH="${BATCH:-1}"
[[ $BATCH =~ ^[1-9][0-9]*$ ]] || { echo "load.sh: error: BATCH must be a number >= 1, got '$BATCH'" >&2; exit 2; }

die() {
    echo "load.sh: error: $*" >&2
    exit 1
}

usage() {
    sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

START=0
case "${1:-}" in
    -h | --help) usage ;;
    --start)
        START=1
        shift
        ;;
esac

if [[ $START == 1 ]]; then
    [[ $# -le 2 ]] || usage
    DURATION="${1:-30s}"
    CONNECTIONS="${2:-64}"
else
    [[ $# -le 3 ]] || usage
    URL="${1:-http://127.0.0.1:8080}"
    DURATION="${2:-30s}"
    CONNECTIONS="${3:-64}"
fi
[[ $CONNECTIONS =~ ^[0-9]+$ && $CONNECTIONS -ge $THREADS ]] ||
    die "CONNECTIONS must be a number >= THREADS ($THREADS), got '$CONNECTIONS'"

command -v wrk >/dev/null || die "wrk is not installed (apt-get install wrk)"
command -v curl >/dev/null || die "curl is not installed"
[[ -f $LUA ]] || die "missing $LUA"
[[ -f $CSV ]] || die "missing $CSV"

DAEMON_PID=""
WORK=""

stop_daemon() {
    # SIGTERM, then wait for the graceful shutdown (drain requests, flush the log).
    if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID"
        local status=0
        wait "$DAEMON_PID" || status=$?
        DAEMON_PID=""
        return "$status"
    fi
    DAEMON_PID=""
}

cleanup() {
    stop_daemon || true
    if [[ -n $WORK ]]; then
        if [[ ${KEEP:-0} == 1 ]]; then
            echo "load.sh: kept $WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Prints one metric's value from the daemon's /metrics (0 when absent).
metric() {
    curl -fsS --max-time 5 "$URL/metrics" 2>/dev/null |
        awk -v name="$1" '$1 == name { print $2; found = 1 } END { if (!found) print 0 }'
}

if [[ $START == 1 ]]; then
    command -v python3 >/dev/null || die "python3 is needed to pick a port and read SQLite"
    if [[ -n ${STEWARD_BIN:-} ]]; then
        BIN="$STEWARD_BIN"
    else
        echo "== building the release binary" >&2
        (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
        BIN="$ROOT/target/release/steward"
    fi
    [[ -x $BIN ]] || die "no binary at $BIN"

    WORK="$(mktemp -d "${TMPDIR:-/tmp}/steward-load.XXXXXX")"
    # A port that is free now (the daemon binds it a moment later).
    PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    URL="http://127.0.0.1:$PORT"
    cat >"$WORK/steward.toml" <<EOF
# Written by scripts/load.sh --start; every other key keeps its default.
[server]
listen = "127.0.0.1:$PORT"

[database]
url = "sqlite://$WORK/steward.db"

[model]
dir = "$WORK/models"

[alerts]
dir = "$WORK/outbox"
EOF
    echo "== starting steward serve on $URL (work dir $WORK, log $WORK/steward.log)" >&2
    # Run from the temp dir so that any relative path also lands there.
    (cd "$WORK" && exec "$BIN" serve --config "$WORK/steward.toml") >"$WORK/steward.log" 2>&1 &
    DAEMON_PID=$!
fi

# Readiness: a model is loaded and the database takes writes. With --start the
# first start trains the bundled model, so give it time.
WAIT_SECS=$([[ $START == 1 ]] && echo 120 || echo 0)
deadline=$((SECONDS + WAIT_SECS))
until READY="$(curl -fsS --max-time 5 "$URL/readyz" 2>&1)"; do
    if [[ -n $DAEMON_PID ]] && ! kill -0 "$DAEMON_PID" 2>/dev/null; then
        tail -n 30 "$WORK/steward.log" >&2 || true
        die "the daemon exited before it was ready (log above)"
    fi
    if ((SECONDS >= deadline)); then
        [[ -n $WORK ]] && { tail -n 30 "$WORK/steward.log" >&2 || true; }
        die "$URL/readyz is not answering 2xx: $READY"
    fi
    sleep 0.25
done
echo "== ready: $READY" >&2

written_before="$(metric steward_log_rows_written_total)"
dropped_before="$(metric steward_log_rows_dropped_total)"
cpu_before="$(metric process_cpu_seconds_total)"

echo "== wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency POST $URL/v1/predict" >&2
OUT="$(mktemp)"
trap 'rm -f "$OUT"; cleanup' EXIT
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$LUA" "$URL/v1/predict" -- "$CSV" "$BATCH" |
    tee "$OUT"
[[ ${PIPESTATUS[0]} == 0 ]] || die "wrk failed"
cpu_after="$(metric process_cpu_seconds_total)"

SUMMARY="$(grep '^steward-load:' "$OUT" | tail -n 1)"
[[ -n $SUMMARY ]] || die "wrk printed no summary line (did predict.lua run?)"
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$SUMMARY"; }
REQUESTS="$(field requests)"
OK="$(field ok)"
# wrk's own count of status >= 400, printed as "Non-2xx or 3xx responses".
NON2XX="$(grep -oP 'Non-2xx or 3xx responses: \K[0-9]+' "$OUT" || echo 0)"
SOCKET_ERRORS="$(grep -oP 'Socket errors: .*' "$OUT" || echo 'Socket errors: none')"

echo "============================================================"
echo "requests:        $REQUESTS ($OK answered 2xx)"
echo "non-2xx:         $NON2XX"
# The daemon's CPU (every thread: handlers and the log writer) per answered
# request and per prediction: a figure that the load generator sharing the cores
# disturbs far less than requests/s.
awk -v a="$cpu_before" -v b="$cpu_after" -v n="$OK" -v k="$BATCH" 'BEGIN {
    if (n > 0) printf "daemon CPU:      %.2f us per request, %.2f us per prediction (process_cpu_seconds_total)\n", (b - a) * 1e6 / n, (b - a) * 1e6 / (n * k) }'
echo "$SOCKET_ERRORS" | sed 's/^Socket errors:/socket errors:  /'
status=0
((NON2XX == 0)) || {
    echo "FAIL: $NON2XX responses were not 2xx" >&2
    status=1
}

if [[ $START == 0 ]]; then
    written="$(metric steward_log_rows_written_total)"
    dropped="$(metric steward_log_rows_dropped_total)"
    echo "log rows written during the run (from /metrics): $((${written%.*} - ${written_before%.*}))," \
        "dropped: $((${dropped%.*} - ${dropped_before%.*}))"
    exit "$status"
fi

# --start: stop the daemon (SIGTERM flushes the log queue), then count the rows.
dropped="$(metric steward_log_rows_dropped_total)"
echo "== stopping the daemon (SIGTERM)" >&2
daemon_status=0
stop_daemon || daemon_status=$?
echo "daemon exit:     $daemon_status"
((daemon_status == 0)) || {
    echo "FAIL: the daemon exited with status $daemon_status (log: $WORK/steward.log)" >&2
    status=1
}
ROWS="$(python3 - "$WORK/steward.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])
PY
)"
# wrk stops at the deadline with up to CONNECTIONS requests in flight: the daemon
# answers and logs them, but wrk does not count them. So every answered row is
# logged when  ok <= rows <= ok + connections  (each times BATCH rows).
ANSWERED=$((OK * BATCH))
IN_FLIGHT=$((CONNECTIONS * BATCH))
echo "rows in DB:      $ROWS (predictions table)"
echo "answered (2xx):  $ANSWERED predictions in $OK requests (wrk; up to $CONNECTIONS more requests were in flight at the end)"
echo "dropped (log):   ${dropped%.*} (steward_log_rows_dropped_total)"
if ((ROWS < ANSWERED)); then
    echo "FAIL: $((ANSWERED - ROWS)) answered predictions are missing from the database" >&2
    status=1
elif ((ROWS > ANSWERED + IN_FLIGHT)); then
    echo "FAIL: $((ROWS - ANSWERED)) more rows than answered predictions (more than the $CONNECTIONS requests in flight)" >&2
    status=1
else
    echo "OK: every answered prediction was logged ($((ROWS - ANSWERED)) rows from requests in flight when wrk stopped)"
fi
exit "$status"
