"""Shared by the walkthrough scripts: the penguins' four body measurements
(rows with a missing one dropped) and the species, as arrays and as the CSV
that goes to `steward import --data`."""

import csv
import pathlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


def penguins():
    """(X float32 [n, 4], y int [n], classes sorted as steward orders them), the
    rows in a fixed shuffled order (the file lists the species one after the
    other; traffic mixes them)."""
    with open(ROOT / "datasets" / "penguins.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if all(r[c] for c in NUMERIC)]
    order = np.random.default_rng(0).permutation(len(rows))
    rows = [rows[i] for i in order]
    classes = sorted({r["label"] for r in rows})
    X = np.array([[float(r[c]) for c in NUMERIC] for r in rows], dtype=np.float32)
    y = np.array([classes.index(r["label"]) for r in rows])
    return X, y, classes


def write_csv(path, X, y, classes):
    """The CSV steward reads: the graph's input columns in order, then `label`."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(NUMERIC + ["label"])
        for xi, yi in zip(X, y):
            w.writerow([f"{v:g}" for v in xi] + [classes[yi]])
