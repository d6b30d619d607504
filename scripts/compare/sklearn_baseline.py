#!/usr/bin/env python3
"""scikit-learn baselines for steward, and a side-by-side comparison.

Usage:
  python3 scripts/compare/sklearn_baseline.py export DIR
      Write breast_cancer.csv, wine.csv, digits.csv, diabetes.csv and
      classification_20k.csv into DIR (header f0..f{n-1},label; label last).

  python3 scripts/compare/sklearn_baseline.py baseline DIR [--json]
      Read the CSVs back from DIR and run 5-fold CV for a linear model and an
      MLP per data set; print a table, or one JSON document with --json.
      Cache it for `compare` with:  ... baseline DIR --json > DIR/sklearn.json

  python3 scripts/compare/sklearn_baseline.py compare DIR STEWARD_BIN
      Use DIR/sklearn.json (or run the baseline and write it), run
      `STEWARD_BIN train --data DIR/X.csv --folds 5 --out DIR/X.steward --json`
      for each CSV, print a Markdown table and write it to DIR/comparison.md.

Requires Python 3.11 with numpy, scipy, scikit-learn.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
import warnings

import numpy as np
import scipy
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_wine,
    make_classification,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold, cross_validate
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

# The machine these baselines are measured on has 2 cores, so CV folds run on 2
# worker processes. Wall-clock numbers are only comparable at the same setting.
N_JOBS = 2
FOLDS = 5
SEED = 42
WITHIN = 0.01

# name -> task ("classification" | "regression"); order is the report order.
DATASETS = {
    "breast_cancer": "classification",
    "wine": "classification",
    "digits": "classification",
    "diabetes": "regression",
    "classification_20k": "classification",
}


# --------------------------------------------------------------------------- export


def _load(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "breast_cancer":
        d = load_breast_cancer()
    elif name == "wine":
        d = load_wine()
    elif name == "digits":
        d = load_digits()
    elif name == "diabetes":
        d = load_diabetes()
    elif name == "classification_20k":
        return make_classification(n_samples=20000, n_features=20, random_state=0)
    else:
        raise ValueError(name)
    return d.data, d.target


def export(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    for name, task in DATASETS.items():
        X, y = _load(name)
        X = np.asarray(X, dtype=np.float64)
        path = os.path.join(out_dir, f"{name}.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow([f"f{i}" for i in range(X.shape[1])] + ["label"])
            for row, target in zip(X, y):
                # repr() of a Python float is the shortest string that round-trips.
                cells = [repr(float(v)) for v in row]
                cells.append(str(int(target)) if task == "classification" else repr(float(target)))
                w.writerow(cells)
        print(f"wrote {path}: {X.shape[0]} rows x {X.shape[1]} features", file=sys.stderr)


def read_csv(path: str, task: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    if header[-1] != "label":
        raise ValueError(f"{path}: last column is {header[-1]!r}, expected 'label'")
    data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    X, y = data[:, :-1], data[:, -1]
    if task == "classification":
        y = y.astype(np.int64)
    return X, y


# ------------------------------------------------------------------------- baseline


def _fit_counting(est, X, y):
    """Fit `est`, returning the number of ConvergenceWarnings it raised.

    CV folds run in joblib worker processes, where warnings never reach the
    parent, so the count travels back on the fitted estimator instead.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(X, y)
    n = 0
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            n += 1
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return n


class CountingClassifier(ClassifierMixin, BaseEstimator):
    def __init__(self, estimator=None):
        self.estimator = estimator

    def fit(self, X, y):
        self.estimator_ = clone(self.estimator)
        self.n_convergence_warnings_ = _fit_counting(self.estimator_, X, y)
        self.classes_ = self.estimator_.classes_
        return self

    def predict(self, X):
        return self.estimator_.predict(X)


class CountingRegressor(RegressorMixin, BaseEstimator):
    def __init__(self, estimator=None):
        self.estimator = estimator

    def fit(self, X, y):
        self.estimator_ = clone(self.estimator)
        self.n_convergence_warnings_ = _fit_counting(self.estimator_, X, y)
        return self

    def predict(self, X):
        return self.estimator_.predict(X)


def _models(task: str):
    if task == "classification":
        return "accuracy", StratifiedKFold(FOLDS, shuffle=True, random_state=SEED), {
            "linear": (
                "StandardScaler+LogisticRegression(max_iter=2000)",
                CountingClassifier(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))),
            ),
            "mlp": (
                "StandardScaler+MLPClassifier(random_state=0, max_iter=500)",
                CountingClassifier(make_pipeline(StandardScaler(), MLPClassifier(random_state=0, max_iter=500))),
            ),
        }
    return "r2", KFold(FOLDS, shuffle=True, random_state=SEED), {
        "linear": (
            "StandardScaler+Ridge()",
            CountingRegressor(make_pipeline(StandardScaler(), Ridge())),
        ),
        "mlp": (
            "StandardScaler+MLPRegressor(random_state=0, max_iter=2000)",
            CountingRegressor(make_pipeline(StandardScaler(), MLPRegressor(random_state=0, max_iter=2000))),
        ),
    }


def baseline(data_dir: str) -> dict:
    t_all = time.perf_counter()
    out = {
        "meta": {
            "sklearn": sklearn.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "n_jobs": N_JOBS,
            "folds": FOLDS,
            "cv_random_state": SEED,
        },
        "datasets": {},
    }
    for name, task in DATASETS.items():
        X, y = read_csv(os.path.join(data_dir, f"{name}.csv"), task)
        metric, cv, models = _models(task)
        entry = {"task": task, "rows": int(X.shape[0]), "features": int(X.shape[1]),
                 "metric": metric, "models": {}}
        for key, (desc, est) in models.items():
            print(f"{name}: {key} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            # Same splits and scores as cross_val_score(est, X, y, cv=cv, scoring=metric,
            # n_jobs=N_JOBS) (which is cross_validate(...)["test_score"]); the fitted
            # estimators are returned only to read their ConvergenceWarning counts.
            res = cross_validate(est, X, y, cv=cv, scoring=metric, n_jobs=N_JOBS,
                                 return_estimator=True)
            wall = time.perf_counter() - t0
            scores = res["test_score"]
            entry["models"][key] = {
                "model": desc,
                "mean": float(np.mean(scores)),
                "std": float(np.std(scores)),
                "scores": [float(s) for s in scores],
                "wall_s": wall,
                "convergence_warnings": int(sum(e.n_convergence_warnings_ for e in res["estimator"])),
            }
        out["datasets"][name] = entry
    out["meta"]["total_wall_s"] = time.perf_counter() - t_all
    return out


def print_baseline_table(res: dict) -> None:
    m = res["meta"]
    print(f"scikit-learn {m['sklearn']}, numpy {m['numpy']}, python {m['python']}, "
          f"{m['folds']}-fold CV, n_jobs={m['n_jobs']}")
    fmt = "{:<20} {:>11} {:<9} {:<7} {:>8} {:>8} {:>9} {:>6}"
    print(fmt.format("data set", "rows x feat", "metric", "model", "mean", "std", "wall s", "conv"))
    for name, d in res["datasets"].items():
        for key, r in d["models"].items():
            print(fmt.format(name, f"{d['rows']}x{d['features']}", d["metric"], key,
                             f"{r['mean']:.4f}", f"{r['std']:.4f}", f"{r['wall_s']:.2f}",
                             r["convergence_warnings"]))
    print(f"total wall: {m['total_wall_s']:.1f} s  (conv = ConvergenceWarnings over the 5 fits)")


# -------------------------------------------------------------------------- compare


def _get(obj: dict, dotted: str):
    """Look up `cv.mean` as a flat key or as obj['cv']['mean']."""
    if dotted in obj:
        return obj[dotted]
    cur = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur


def _cell(text: str, limit: int = 300) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else "…" + text[-limit:]


def run_steward(bin_path: str, data_dir: str, name: str) -> dict:
    csv_path = os.path.join(data_dir, f"{name}.csv")
    out_path = os.path.join(data_dir, f"{name}.steward")
    cmd = [bin_path, "train", "--data", csv_path, "--folds", str(FOLDS), "--out", out_path, "--json"]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        return {"error": f"could not run {bin_path}: {e}", "wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        return {"error": f"exit {p.returncode}: {p.stderr.strip() or p.stdout.strip()}", "wall_s": wall}
    try:
        doc = json.loads(p.stdout)
        return {
            "mean": float(_get(doc, "cv.mean")),
            "std": float(_get(doc, "cv.std")),
            "metric": str(_get(doc, "cv.metric")),
            "selected": _get(doc, "selected"),
            "wall_s": wall,
        }
    except (ValueError, KeyError, TypeError) as e:
        return {"error": f"bad JSON on stdout ({e!r}): {p.stdout.strip()}", "wall_s": wall}


def compare(data_dir: str, steward_bin: str) -> str:
    cache = os.path.join(data_dir, "sklearn.json")
    if os.path.exists(cache):
        print(f"using cached {cache}", file=sys.stderr)
        with open(cache) as f:
            base = json.load(f)
    else:
        base = baseline(data_dir)
        with open(cache, "w") as f:
            json.dump(base, f, indent=2)
            f.write("\n")

    cols = ["data set", "rows × features", "metric", "steward CV mean ± std", "steward wall s",
            "sklearn linear mean ± std", "linear wall s", "sklearn MLP mean ± std", "MLP wall s",
            "best sklearn", "steward − best", f"within {WITHIN}"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name in DATASETS:
        d = base["datasets"][name]
        lin, mlp = d["models"]["linear"], d["models"]["mlp"]
        best_key = "linear" if lin["mean"] >= mlp["mean"] else "mlp"
        best = d["models"][best_key]["mean"]
        st = run_steward(steward_bin, data_dir, name)
        if "error" in st:
            st_cell = "ERROR: " + _cell(st["error"])
            diff_cell, within_cell = "—", "no"
        else:
            sel = st["selected"]
            sel = sel if isinstance(sel, str) else json.dumps(sel, separators=(",", ":"))
            st_cell = f"{st['mean']:.4f} ± {st['std']:.4f} ({_cell(sel, 80)})"
            if st["metric"] != d["metric"]:
                st_cell += f" [metric {_cell(st['metric'], 40)}]"
            diff = st["mean"] - best
            diff_cell = f"{diff:+.4f}"
            # "within": steward is at most WITHIN below the best sklearn model.
            within_cell = "yes" if diff >= -WITHIN and st["metric"] == d["metric"] else "no"
        row = [
            name, f"{d['rows']} × {d['features']}", d["metric"],
            st_cell, f"{st['wall_s']:.2f}",
            f"{lin['mean']:.4f} ± {lin['std']:.4f}", f"{lin['wall_s']:.2f}",
            f"{mlp['mean']:.4f} ± {mlp['std']:.4f}", f"{mlp['wall_s']:.2f}",
            f"{best_key} {best:.4f}", diff_cell, within_cell,
        ]
        lines.append("| " + " | ".join(row) + " |")
    m = base["meta"]
    lines.append("")
    lines.append(f"sklearn {m['sklearn']}, {m['folds']}-fold CV (shuffle, random_state="
                 f"{m['cv_random_state']}), n_jobs={m['n_jobs']}. Std is the population std "
                 f"over folds. \"within {WITHIN}\" = steward mean ≥ best sklearn mean − {WITHIN}.")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(data_dir, "comparison.md"), "w") as f:
        f.write(table)
    return table


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("export", help="write the five CSV data sets into DIR")
    p.add_argument("dir")
    p = sub.add_parser("baseline", help="5-fold CV scikit-learn baselines on DIR/*.csv")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p = sub.add_parser("compare", help="compare steward train against the baselines")
    p.add_argument("dir")
    p.add_argument("steward_bin")
    args = ap.parse_args(argv)

    if args.cmd == "export":
        export(args.dir)
    elif args.cmd == "baseline":
        res = baseline(args.dir)
        if args.json:
            json.dump(res, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print_baseline_table(res)
    else:
        sys.stdout.write(compare(args.dir, args.steward_bin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
