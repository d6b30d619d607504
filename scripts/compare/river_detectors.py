#!/usr/bin/env python3
"""Run River's drift detectors on steward's exported evaluation streams.

steward's `detection_eval` example writes the streams its own detectors are
evaluated on, plus where those detectors fired:

  cargo run --release --example detection_eval -- DIR
  python3 scripts/compare/river_detectors.py DIR [--markdown]

This script replays every stream of every seed through River's detectors and
prints one table with steward's detectors first, then River's, each scored the
same way.

Input (DIR):
  streams.json      {"seeds": [...],
                     "streams": {NAME: {"kind": "concept" | "features", "rows": N,
                                        "change_at": ROW or null, "description": ...}},
                     "steward": {NAME: {SEED: {DETECTOR: [ROW, ...]}}}}
  seed<k>/NAME.csv  concept streams: one column `error` (0 or 1);
                    feature streams: numeric columns f0..f9, possibly a
                    categorical column (skipped: River's detectors are numeric).
  Rows are 0-based; a detection is the row index at which a detector fired.
  A detector missing from a seed in streams.json counts as no detections.

River detectors (river.drift, default parameters):
  concept streams   ADWIN(), PageHinkley() (mode='both'), PageHinkley(mode='up'),
                    binary.DDM(), each fed the error values one row at a time;
                    a detection is a row after whose update `drift_detected` is
                    True.
  feature streams   one ADWIN() and one PageHinkley() per numeric column, fed the
                    raw values; the stream-level detections of a detector are the
                    union of its per-column detection rows.
  features_new_category: the change is a new value of the categorical column,
                    which River's numeric detectors cannot see; reported "n/a".

Scores, per (stream, detector), over the seeds:
  detected          k/n: seeds with at least one detection at or after
                    change_at ("-" for streams without a change).
  median/max delay  over the seeds that detected: first detection row
                    >= change_at, minus change_at (rows).
  false alarms      per 1,000 rows, averaged over seeds: detections before
                    change_at divided by change_at (all detections divided by
                    `rows` for streams without a change), times 1,000.

Output is deterministic: streams in streams.json order; within a stream,
steward's detectors (sorted by name) first, then River's in the order above.

Requires Python 3.10+ with river (tested with 0.26.1).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import river
from river import drift

# (label, factory) pairs; factories so that every seed and column gets a fresh
# detector.
CONCEPT_DETECTORS: tuple[tuple[str, Callable[[], object]], ...] = (
    ("ADWIN", lambda: drift.ADWIN()),
    ("PageHinkley", lambda: drift.PageHinkley()),
    ("PageHinkley(up)", lambda: drift.PageHinkley(mode="up")),
    ("DDM", lambda: drift.binary.DDM()),
)
FEATURE_DETECTORS: tuple[tuple[str, Callable[[], object]], ...] = (
    ("ADWIN", lambda: drift.ADWIN()),
    ("PageHinkley", lambda: drift.PageHinkley()),
)
# Streams whose change River's numeric detectors cannot observe.
RIVER_NOT_APPLICABLE = frozenset({"features_new_category"})
BINARY_DETECTORS = frozenset({"DDM"})

COLUMNS = (
    "stream",
    "detector",
    "detected (k/n seeds)",
    "median delay (rows)",
    "max delay",
    "false alarms per 1,000 rows",
)
NONE = "-"


@dataclass(frozen=True)
class Stream:
    name: str
    kind: str
    rows: int
    change_at: int | None


@dataclass(frozen=True)
class Score:
    stream: str
    detector: str
    seeds: int
    detected: int | None  # None: the stream has no change
    median_delay: float | None
    max_delay: int | None
    false_alarms_per_1k: float | None
    applicable: bool = True


# ---------------------------------------------------------------------- input


def load_manifest(directory: Path) -> tuple[list[int], list[Stream], dict]:
    with open(directory / "streams.json", encoding="utf-8") as f:
        manifest = json.load(f)
    seeds = [int(s) for s in manifest["seeds"]]
    streams = [
        Stream(
            name=name,
            kind=spec["kind"],
            rows=int(spec["rows"]),
            change_at=None if spec.get("change_at") is None else int(spec["change_at"]),
        )
        for name, spec in manifest["streams"].items()
    ]
    for stream in streams:
        if stream.kind not in ("concept", "features"):
            raise ValueError(f"{stream.name}: unknown kind {stream.kind!r}")
    return seeds, streams, manifest.get("steward", {})


def _parse_floats(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def read_numeric_columns(path: Path, expected_rows: int) -> dict[str, list[float]]:
    """Numeric columns of a CSV, in file order; non-numeric columns are dropped."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        raw: list[list[str]] = [[] for _ in header]
        for row in reader:
            for column, value in zip(raw, row, strict=True):
                column.append(value)
    if raw and len(raw[0]) != expected_rows:
        raise ValueError(f"{path}: {len(raw[0])} rows, streams.json says {expected_rows}")
    columns = {}
    for name, values in zip(header, raw):
        parsed = _parse_floats(values)
        if parsed is not None:
            columns[name] = parsed
    return columns


# ------------------------------------------------------------------ detection


def run_detector(detector, values: Iterable) -> list[int]:
    """Rows after whose update the detector reports a drift."""
    rows = []
    for row, x in enumerate(values):
        detector.update(x)
        if detector.drift_detected:
            rows.append(row)
    return rows


def river_concept_detections(errors: list[float]) -> dict[str, list[int]]:
    if any(e not in (0.0, 1.0) for e in errors):
        raise ValueError("concept stream `error` column must be 0 or 1")
    as_bool = [e == 1.0 for e in errors]
    return {
        label: run_detector(make(), as_bool if label in BINARY_DETECTORS else errors)
        for label, make in CONCEPT_DETECTORS
    }


def river_feature_detections(columns: dict[str, list[float]]) -> dict[str, list[int]]:
    detections = {}
    for label, make in FEATURE_DETECTORS:
        rows: set[int] = set()
        for values in columns.values():
            rows.update(run_detector(make(), values))
        detections[label] = sorted(rows)
    return detections


def river_detections(directory: Path, seed: int, stream: Stream) -> dict[str, list[int]]:
    columns = read_numeric_columns(directory / f"seed{seed}" / f"{stream.name}.csv", stream.rows)
    if stream.kind == "concept":
        if "error" not in columns:
            raise ValueError(f"seed{seed}/{stream.name}.csv: no numeric `error` column")
        return river_concept_detections(columns["error"])
    if not columns:
        raise ValueError(f"seed{seed}/{stream.name}.csv: no numeric columns")
    return river_feature_detections(columns)


# -------------------------------------------------------------------- scoring


def score(stream: Stream, detector: str, per_seed: list[list[int]]) -> Score:
    """Score one detector's detections (one list of rows per seed) on a stream."""
    change = stream.change_at
    # Rows in which a false alarm can occur: before the change, or all of them.
    alarm_rows = stream.rows if change is None else change
    rates = [1000.0 * sum(1 for r in rows if change is None or r < change) / alarm_rows
             for rows in per_seed] if alarm_rows > 0 else []
    false_alarms = statistics.fmean(rates) if rates else None
    if change is None:
        return Score(stream.name, detector, len(per_seed), None, None, None, false_alarms)
    delays = []
    for rows in per_seed:
        after = [r for r in rows if r >= change]
        if after:
            delays.append(min(after) - change)
    return Score(
        stream.name,
        detector,
        len(per_seed),
        len(delays),
        statistics.median(delays) if delays else None,
        max(delays) if delays else None,
        false_alarms,
    )


def steward_scores(stream: Stream, seeds: list[int], steward: dict) -> list[Score]:
    by_seed = steward.get(stream.name, {})
    detectors = sorted({d for seed in seeds for d in by_seed.get(str(seed), {})})
    return [
        score(stream, f"steward {d}",
              [sorted(int(r) for r in by_seed.get(str(seed), {}).get(d, [])) for seed in seeds])
        for d in detectors
    ]


def river_scores(directory: Path, stream: Stream, seeds: list[int]) -> list[Score]:
    labels = [label for label, _ in
              (CONCEPT_DETECTORS if stream.kind == "concept" else FEATURE_DETECTORS)]
    if stream.name in RIVER_NOT_APPLICABLE:
        return [Score(stream.name, f"river {label}", len(seeds), None, None, None, None,
                      applicable=False) for label in labels]
    per_seed = [river_detections(directory, seed, stream) for seed in seeds]
    return [score(stream, f"river {label}", [d[label] for d in per_seed]) for label in labels]


# --------------------------------------------------------------------- output


def _delay(value: float | None) -> str:
    if value is None:
        return NONE
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def cells(s: Score) -> list[str]:
    if not s.applicable:
        return [s.stream, s.detector] + ["n/a"] * 4
    detected = NONE if s.detected is None else f"{s.detected}/{s.seeds}"
    rate = NONE if s.false_alarms_per_1k is None else f"{s.false_alarms_per_1k:.3f}"
    return [s.stream, s.detector, detected, _delay(s.median_delay), _delay(s.max_delay), rate]


def render_markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join(["---", "---"] + ["---:"] * (len(COLUMNS) - 2)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_text(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [list(COLUMNS)] + rows) for i in range(len(COLUMNS))]

    def line(row: list[str]) -> str:
        return "  ".join(v.ljust(w) if i < 2 else v.rjust(w)
                         for i, (v, w) in enumerate(zip(row, widths))).rstrip()

    return "\n".join([line(list(COLUMNS)), line(["-" * w for w in widths])] +
                     [line(r) for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Score River's drift detectors and steward's on the same exported streams.")
    parser.add_argument("dir", type=Path, help="output directory of the detection_eval example")
    parser.add_argument("--markdown", action="store_true", help="print a GitHub markdown table")
    args = parser.parse_args(argv)

    seeds, streams, steward = load_manifest(args.dir)
    rows = [
        cells(s)
        for stream in streams
        for s in steward_scores(stream, seeds, steward) + river_scores(args.dir, stream, seeds)
    ]

    print(f"Drift detectors on steward's evaluation streams: river {river.__version__}, "
          f"{len(seeds)} seeds.")
    print()
    print(render_markdown(rows) if args.markdown else render_text(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
