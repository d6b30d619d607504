#!/usr/bin/env python3
"""River's ADWIN detections on the streams that src/monitor/adwin.rs tests.

  python3 scripts/compare/river_adwin.py

Prints, for every stream and setting, the rows (0-based) after whose update
River reported drift and the window width right after each, as
`(row, width)` pairs, then the window's width, total and variance after the
last row. The numbers are hard-coded in the tests of src/monitor/adwin.rs; rerun
this script after a River upgrade and compare.

Two flavours are run:
  ADWIN   river.drift.ADWIN(delta=...): the public detector, which starts a new
          window at the update after a detection (steward's `Adwin` default).
  kept    river.drift.ADWIN(delta=...)._helper, the AdaptiveWindowing inside
          it, which keeps the shrunk window after a detection (steward's
          `Adwin { keep_window: true, .. }`).

Streams (u_i = ((i*2654435761 + c) mod 2^32) / 2^32, the hash detect.rs uses):
  rising    4,000 rows, 1.0 when u_i < p (c = 12345), p = 0.1 before row 1500,
            0.35 from it on
  falling   the same with p = 0.35, then 0.1
  real      5,000 rows, u_i (c = 12345) before row 2000, u_i + 0.3 from it on
            (mean 0.5, then 0.8); delta 0.002 and 0.05
  steady    20,000 rows, 1.0 when u_i < 0.2 (c = 777)

Requires Python 3.10+ with river (the tests quote 0.26.1).
"""

from __future__ import annotations

import river
from river import drift

M = 2**32


def u(i: int, c: int = 12345) -> float:
    return ((i * 2654435761 + c) % M) / M


def rates(before: float, after: float, rows: int = 4000, change: int = 1500) -> list[float]:
    return [1.0 if u(i) < (before if i < change else after) else 0.0 for i in range(rows)]


def real() -> list[float]:
    return [u(i) + 0.3 if i >= 2000 else u(i) for i in range(5000)]


def steady() -> list[float]:
    return [1.0 if u(i, 777) < 0.2 else 0.0 for i in range(20_000)]


def run_adwin(values: list[float], delta: float) -> tuple[list[tuple[int, int]], tuple]:
    d = drift.ADWIN(delta=delta)
    hits = []
    for row, x in enumerate(values):
        d.update(x)
        if d.drift_detected:
            hits.append((row, int(d.width)))
    return hits, (int(d.width), d.total, d.variance)


def run_kept(values: list[float], delta: float) -> tuple[list[tuple[int, int]], tuple]:
    h = drift.ADWIN(delta=delta)._helper
    hits = []
    for row, x in enumerate(values):
        if h.update(x):
            hits.append((row, int(h.get_width())))
    return hits, (int(h.get_width()), h.get_total(), h.get_variance())


def main() -> None:
    print(f"river {river.__version__}")
    streams = [
        ("rising", rates(0.1, 0.35), 0.002),
        ("falling", rates(0.35, 0.1), 0.002),
        ("real", real(), 0.002),
        ("real", real(), 0.05),
        ("steady", steady(), 0.002),
    ]
    for name, values, delta in streams:
        for flavour, run in (("ADWIN", run_adwin), ("kept", run_kept)):
            hits, (width, total, variance) = run(values, delta)
            print(f"{name:8} delta={delta:<6} {flavour:6} detections={hits}")
            print(f"{'':8} {'':12} {'':6} end: width={width} total={total!r} "
                  f"variance={variance!r}")


if __name__ == "__main__":
    main()
