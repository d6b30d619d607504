#!/usr/bin/env bash
# Soak test of steward: an hour of steady mixed load (predictions, feedback,
# polls, swaps by hand) with the daemon's memory, fds and log counters sampled
# every minute, and a check that every answered prediction is in SQLite.
#
# Usage:
#   scripts/soak.sh [ARGS...]
#       builds the release binary and examples/soak.rs, then runs
#       `target/release/examples/soak ARGS...`; without ARGS, `--start`
#       (60 minutes against a fresh daemon in a temporary directory).
#
# Examples:
#   scripts/soak.sh --start --json > soak.json
#   scripts/soak.sh --start --minutes 3
#   scripts/soak.sh --url http://127.0.0.1:8080 --pid "$(pidof steward)" --minutes 10
#
# `soak --help` lists every flag; the header of examples/soak.rs says what the
# load is and what is checked. Exit status: the tool's (0; 1 when an answer was
# 5xx, a request failed, rows do not match answers or the daemon failed; 2 on
# usage errors); -h prints this.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

case "${1:-}" in
    -h | --help)
        sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
esac
[[ $# -gt 0 ]] || set -- --start

echo "== building the release binary and the soak example" >&2
(cd "$ROOT" && cargo build --release --quiet --bin steward --example soak) || {
    echo "soak.sh: error: cargo build --release failed" >&2
    exit 1
}
exec "$ROOT/target/release/examples/soak" "$@"
