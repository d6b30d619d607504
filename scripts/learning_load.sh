#!/usr/bin/env bash
# Load test of steward's continuous learning (issue 7): feedback labels over HTTP
# while predictions are served, and model swaps under prediction load.
#
# Usage:
#   scripts/learning_load.sh [ARGS...]
#       builds the release binary and examples/learning_load.rs, then runs
#       `target/release/examples/learning_load ARGS...`; without ARGS, `--start`
#       (both phases against a fresh daemon in a temporary directory).
#
# Examples:
#   scripts/learning_load.sh --start --json > run.json
#   scripts/learning_load.sh --start --phase feedback --batch 1
#   scripts/learning_load.sh --url http://127.0.0.1:8080 --phase swap
#
# `learning_load --help` lists every flag; the header of examples/learning_load.rs
# says what each phase measures. Exit status: the tool's (0; 1 when an answer was
# not 2xx or the daemon failed; 2 on usage errors); -h prints this.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

case "${1:-}" in
    -h | --help)
        sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
esac
[[ $# -gt 0 ]] || set -- --start

echo "== building the release binary and the learning_load example" >&2
(cd "$ROOT" && cargo build --release --quiet --bin steward --example learning_load) || {
    echo "learning_load.sh: error: cargo build --release failed" >&2
    exit 1
}
exec "$ROOT/target/release/examples/learning_load" "$@"
