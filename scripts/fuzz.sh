#!/usr/bin/env bash
# Fuzz steward's input parsers with cargo-fuzz (libFuzzer + AddressSanitizer).
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  how long each target runs (default 600)
#   TARGET...           any of: request_json csv_table artifact config (default: all)
#
#   scripts/fuzz.sh                  # every target, 10 minutes each
#   scripts/fuzz.sh 60 config        # one target, one minute
#
# The targets live in fuzz/fuzz_targets/ (the fuzz crate in fuzz/ is its own
# workspace and builds into fuzz/target/):
#   request_json  POST /v1/predict and /v1/feedback bodies: server::body::parse,
#                 Schema::encode_json, the answers serialised back
#   csv_table     data::Table::parse, column_kind, Schema::fit (last column = label)
#   artifact      model::artifact::from_bytes, check, to_bytes, one forward pass
#   config        config::Config::from_parts (TOML syntax and validation)
#
# What it does: installs cargo-fuzz if it is missing, builds every target once
# with the nightly toolchain (`cargo +nightly fuzz build -O`), then runs each
# target's binary (fuzz/target/<host>/release/<target>, as `cargo fuzz run` would,
# but without rebuilding between targets: every target tests the same snapshot
# of src/) for SECONDS_PER_TARGET with -max_total_time, -rss_limit_mb=2048 and the
# dictionary in fuzz/dict/<target>.dict when there is one. Each target's corpus
# grows in place in fuzz/corpus/<target>/ (shrink it with
# `cargo +nightly fuzz cmin -O <target>` before committing: keep fuzz/corpus small).
# A crashing, timing-out or out-of-memory input is written to
# fuzz/artifacts/<target>/; reproduce one with
# `cargo +nightly fuzz run -O <target> fuzz/artifacts/<target>/<file>` and minimise
# it with `cargo +nightly fuzz tmin -O <target> fuzz/artifacts/<target>/<file>`.
#
# Output: fuzz/runs/<UTC time>-<target>.txt per run, with libFuzzer's last status
# lines (execs, cov, ft, corpus size, exec/s, rss), its final stats and, after a
# crash, the error and the artifact's path. The full log of each run is in
# fuzz/target/logs/. Exits 0 when every target ran its time without a finding,
# 1 when any target crashed (or timed out / ran out of memory), 2 on bad usage or
# a failed build.
#
# Environment:
#   CARGO_BUILD_JOBS   build parallelism (default 1: the machine is shared)
#   FUZZ_TIMEOUT       seconds one input may take before it counts as a hang (25)
#   FUZZ_DEBUG_ASSERTIONS=1  build with `-O -a`: debug assertions and overflow
#                      checks on (an overflow is then a finding; rebuilds everything)

set -uo pipefail

ALL_TARGETS=(request_json csv_table artifact config)

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

seconds=600
if [[ $# -gt 0 ]]; then
    case "$1" in
        -h|--help) usage ;;
        *[!0-9]*|'') echo "error: SECONDS_PER_TARGET must be a whole number, got \`$1\`" >&2; usage ;;
        *) seconds=$1; shift ;;
    esac
fi
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    targets=("${ALL_TARGETS[@]}")
fi
for t in "${targets[@]}"; do
    if [[ ! " ${ALL_TARGETS[*]} " == *" $t "* ]]; then
        echo "error: unknown target \`$t\` (targets: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 2
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
timeout_secs="${FUZZ_TIMEOUT:-25}"
build_flags=(-O)
if [[ "${FUZZ_DEBUG_ASSERTIONS:-0}" == 1 ]]; then
    build_flags+=(-a)
fi

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "== installing the nightly toolchain (cargo-fuzz needs it)"
    rustup toolchain install nightly --profile minimal || {
        echo "error: no nightly toolchain and it could not be installed" >&2
        exit 2
    }
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked || cargo install cargo-fuzz || {
        echo "error: cargo install cargo-fuzz failed" >&2
        exit 2
    }
fi

echo "== building the fuzz targets (cargo +nightly fuzz build ${build_flags[*]}, -j $CARGO_BUILD_JOBS)"
if ! cargo +nightly fuzz build "${build_flags[@]}"; then
    echo "error: the fuzz targets do not build" >&2
    exit 2
fi

# What was built, for the summaries (read-only git queries).
src_state="commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! git diff --quiet HEAD -- src Cargo.toml 2>/dev/null; then
    src_state="$src_state + uncommitted changes"
fi
host=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin_dir="fuzz/target/$host/release"
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p fuzz/runs fuzz/target/logs
failed=()
for t in "${targets[@]}"; do
    corpus="fuzz/corpus/$t"
    artifacts="fuzz/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    summary="fuzz/runs/$stamp-$t.txt"
    log="fuzz/target/logs/$stamp-$t.log"
    marker="fuzz/target/logs/.$stamp-$t.start"
    touch "$marker"
    args=(-artifact_prefix="$artifacts/" -max_total_time="$seconds" -rss_limit_mb=2048
          -timeout="$timeout_secs" -print_final_stats=1)
    if [[ -f "fuzz/dict/$t.dict" ]]; then
        args+=(-dict="fuzz/dict/$t.dict")
    fi
    echo "== $t: ${seconds}s (corpus $corpus, $(find "$corpus" -type f | wc -l) files; log $log)"
    start=$(date +%s)
    "$bin_dir/$t" "${args[@]}" "$corpus" >"$log" 2>&1
    status=$?
    elapsed=$(( $(date +%s) - start ))
    new_artifacts=$(find "$artifacts" -type f -newer "$marker" | sort)
    found=$(printf '%s' "$new_artifacts" | grep -c .)
    rm -f "$marker"
    {
        echo "target: $t"
        echo "started: $stamp (UTC), ran ${elapsed}s of ${seconds}s, exit status $status"
        echo "built: cargo +nightly fuzz build ${build_flags[*]} (src at $src_state)"
        echo "command: $bin_dir/$t ${args[*]} $corpus"
        echo "corpus: $corpus ($(find "$corpus" -type f | wc -l) files, $(find "$corpus" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}') bytes)"
        echo "new artifacts in $artifacts: $found"
        echo
        echo "-- last status lines"
        grep -E '^#[0-9]+' "$log" | tail -n 5
        echo
        echo "-- final stats"
        grep -E '^(Done [0-9]+ runs|stat::)' "$log"
        if [[ $status -ne 0 || $found -gt 0 ]]; then
            echo
            echo "-- finding"
            grep -E -A 30 '^(==[0-9]+==ERROR|thread .* panicked|ALARM|==[0-9]+== ERROR: libFuzzer)' "$log" | head -n 60
            echo
            echo "-- inputs written"
            printf '%s\n' "$new_artifacts"
            echo "reproduce: cargo +nightly fuzz run ${build_flags[*]} $t <artifact>"
            echo "minimise:  cargo +nightly fuzz tmin ${build_flags[*]} $t <artifact>"
        fi
    } >"$summary"
    if [[ $status -ne 0 || $found -gt 0 ]]; then
        echo "!! $t: finding (exit $status); see $summary and $artifacts/"
        failed+=("$t")
    else
        echo "   $t: $(grep -E '^#[0-9]+' "$log" | tail -n 1)"
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "== findings in: ${failed[*]} (inputs in fuzz/artifacts/<target>/, summaries in fuzz/runs/)"
    exit 1
fi
echo "== no findings (summaries in fuzz/runs/$stamp-*.txt)"
