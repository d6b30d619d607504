#!/usr/bin/env python3
"""Prequential evaluation of steward over HTTP against River, on streams with one
abrupt concept change.

  python3 scripts/compare/concept_change.py --quick            # smoke run
  python3 scripts/compare/concept_change.py --seeds 1 2 3 --json out.json

For every stream and seed:

1. A stream is generated with River's synthetic generators:
   sea       SEA(variant=0, seed=s), then SEA(variant=3, seed=s+1000) after the
             change (3 numeric features x0..x2, label 0/1).
   agrawal   Agrawal(classification_function=0, seed=s), then
             Agrawal(classification_function=2, seed=s+1000). elevel, car and
             zipcode are sent as strings with a prefix ("e2", "c13", "z4") so that
             steward's CSV inference and its request schema treat them as
             categorical; River's HAT sees the same strings, River's linear model
             one-hot encodes them.
   friedman  regression. FriedmanDrift(drift_type='gra', position=(C, 10**9),
             seed=s): the Friedman #1 function until row C (the change), then the
             same function on permuted features ("global abrupt" drift of
             Ikonomovska et al.; the second position, where the old concept would
             come back, lies beyond the stream). x0..x9 numeric.
   The first --boot rows go to boot.csv (steward's first model:
   model.bootstrap_data; River learners learn_one on them first), then --pre
   pre-change rows and --post post-change rows are served.
2. `steward serve` (--bin, default target/release/steward) runs in a fresh temp dir with [training] min_rows=300,
   folds=3, drift_cooldown_secs=600, [drift] interval_secs=5, JSON logs.
3. Every served row: POST /v1/predict, then POST /v1/feedback with the true label.
4. River, test-then-train on the same rows: StandardScaler | LogisticRegression
   (LinearRegression for friedman) and HoeffdingAdaptiveTree{Classifier,Regressor}.
5. Metrics: accuracy (MAE for regression) over post-change rows from --skip
   (1,000) after the change to the end; recovery labels: post-change labels until
   steward's rolling accuracy over 500 rows (rolling MAE) is back within 0.02
   (5% relative) of its level over the 1,000 rows before the change (the window
   must be all post-change rows); concept_drift events from the daemon's log
   (before the change: false alarms), each with the served row it arrived at
   (by wall clock) and the row where the detector dates the change
   (change_time); retraining runs from GET /v1/retrain.

Requires river (0.26.1 tested), numpy, requests.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque

import requests
from river import compose, linear_model, preprocessing, tree
from river.datasets import synth

BIN = str(pathlib.Path(__file__).resolve().parents[2] / "target" / "release" / "steward")
CATS = ("elevel", "car", "zipcode")
AGRAWAL_NUM = ("salary", "commission", "age", "hvalue", "hyears", "loan")


# ----------------------------------------------------------------- streams

def take(gen, n):
    return list(gen.take(n)) if n > 0 else []


def make_stream(name: str, seed: int, boot: int, pre: int, post: int):
    """Returns (rows, task) with rows = [(features dict, label)] of length
    boot+pre+post; the change is at index boot+pre."""
    before = boot + pre
    if name == "sea":
        a = take(synth.SEA(variant=0, seed=seed), before)
        b = take(synth.SEA(variant=3, seed=seed + 1000), post)
        rows = [({f"x{k}": float(v) for k, v in x.items()}, int(y)) for x, y in a + b]
        return rows, "classification"
    if name == "agrawal":
        a = take(synth.Agrawal(classification_function=0, seed=seed), before)
        b = take(synth.Agrawal(classification_function=2, seed=seed + 1000), post)
        rows = []
        for x, y in a + b:
            f = {}
            for k, v in x.items():
                if k in CATS:
                    f[k] = f"{k[0]}{int(v)}"
                else:
                    f[k] = float(v)
            rows.append((f, int(y)))
        return rows, "classification"
    if name == "friedman":
        g = synth.FriedmanDrift(drift_type="gra", position=(before, 10**9), seed=seed)
        rows = [({f"x{k}": float(v) for k, v in x.items()}, float(y))
                for x, y in g.take(before + post)]
        return rows, "regression"
    raise ValueError(name)


# ----------------------------------------------------------------- River

def river_models(name: str, task: str, seed: int):
    if task == "regression":
        lin = preprocessing.StandardScaler() | linear_model.LinearRegression()
        hat = tree.HoeffdingAdaptiveTreeRegressor(seed=seed)
    else:
        if name == "agrawal":
            lin = ((compose.Select(*AGRAWAL_NUM) | preprocessing.StandardScaler())
                   + (compose.Select(*CATS) | preprocessing.OneHotEncoder())) \
                | linear_model.LogisticRegression()
        else:
            lin = preprocessing.StandardScaler() | linear_model.LogisticRegression()
        hat = tree.HoeffdingAdaptiveTreeClassifier(seed=seed)
    return {"river_linear": lin, "river_hat": hat}


def river_predict(model, x, task):
    p = model.predict_one(x)
    if task == "regression":
        return float(p) if p is not None else 0.0
    return None if p is None else int(p)


# ----------------------------------------------------------------- daemon

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(d: str, port: int) -> str:
    cfg = f"""[server]
listen = "127.0.0.1:{port}"
token_env = "STEWARD_EVAL_NO_TOKEN"

[database]
url = "sqlite://data/steward.db"

[model]
dir = "data/models"
bootstrap_data = "boot.csv"
label = "label"

[training]
min_rows = 300
folds = 3
drift_cooldown_secs = 600

[online]

[drift]
interval_secs = 5

[alerts]
dir = "data/outbox"

[log]
format = "json"
level = "info"
"""
    path = os.path.join(d, "steward.toml")
    with open(path, "w") as f:
        f.write(cfg)
    return path


def start_daemon(d: str, port: int, boot_rows, timeout=300):
    names = list(boot_rows[0][0].keys())
    with open(os.path.join(d, "boot.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names + ["label"])
        for x, y in boot_rows:
            w.writerow([x[k] for k in names] + [y])
    os.makedirs(os.path.join(d, "data"), exist_ok=True)
    cfg = write_config(d, port)
    log = open(os.path.join(d, "daemon.log"), "w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEWARD_")}
    env.pop("RUST_LOG", None)
    proc = subprocess.Popen([BIN, "serve", "--config", cfg], cwd=d, stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"steward exited {proc.returncode}: see {d}/daemon.log")
        try:
            if requests.get(base + "/readyz", timeout=2).status_code == 200:
                return proc, base, time.time() - t0
        except requests.RequestException:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("steward not ready in time")


def stop_daemon(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def parse_log(path: str):
    """concept_drift events and error/warn lines from the daemon's JSON log."""
    events, problems = [], []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                j = json.loads(line)
            except ValueError:
                if "concept_drift" in line:
                    events.append({"raw": line})
                continue
            level = str(j.get("level", "")).upper()
            fields = j.get("fields", {})
            monitoring = fields.get("message") == "monitoring event"
            if level in ("WARN", "ERROR") and not monitoring:
                problems.append(j)
            if monitoring and fields.get("event") == "concept_drift":
                try:
                    events.append(json.loads(fields["details"]))
                except (KeyError, TypeError, ValueError):
                    events.append(j)
    return events, problems


def find_key(obj, key):
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            r = find_key(v, key)
            if r is not None:
                return r
    elif isinstance(obj, list):
        for v in obj:
            r = find_key(v, key)
            if r is not None:
                return r
    elif isinstance(obj, str) and key in obj:
        try:
            return find_key(json.loads(obj), key)
        except ValueError:
            return None
    return None


def row_at(times_ms, t_ms):
    """Index (0-based, among served rows) of the last row whose feedback was sent
    at or before t_ms; -1 if none."""
    lo, hi = 0, len(times_ms)
    while lo < hi:
        mid = (lo + hi) // 2
        if times_ms[mid] <= t_ms:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


# ----------------------------------------------------------------- one run

def run_one(name, seed, args):
    rows, task = make_stream(name, seed, args.boot, args.pre, args.post)
    boot, served = rows[:args.boot], rows[args.boot:]
    change = args.pre  # index of the first post-change row among served rows
    d = tempfile.mkdtemp(prefix=f"cc-{name}-{seed}-")
    port = free_port()
    t_start = time.time()
    proc, base, t_ready = start_daemon(d, port, boot)
    out = {"stream": name, "seed": seed, "task": task, "dir": d, "ready_secs": t_ready}
    models = river_models(name, task, seed)
    for m in models.values():
        for x, y in boot:
            m.learn_one(x, y)
    preds = {k: [] for k in ["steward", *models]}
    versions, times_ms, api_errors = [], [], []
    s = requests.Session()
    try:
        for i, (x, y) in enumerate(served):
            for k, m in models.items():
                preds[k].append(river_predict(m, x, task))
                m.learn_one(x, y)
            try:
                r = s.post(base + "/v1/predict", json={"features": x}, timeout=30)
                if r.status_code != 200:
                    api_errors.append({"row": i, "call": "predict", "status": r.status_code,
                                       "body": r.text[:300]})
                    preds["steward"].append(None)
                    versions.append(None)
                    times_ms.append(int(time.time() * 1000))
                    continue
                a = r.json()
                p = a["prediction"]
                preds["steward"].append(float(p) if task == "regression" else str(p))
                versions.append(a.get("model_version"))
                label = y if task == "regression" else str(y)
                r = s.post(base + "/v1/feedback", json={"id": a["id"], "label": label},
                           timeout=30)
                if r.status_code not in (200, 201, 202):
                    api_errors.append({"row": i, "call": "feedback", "status": r.status_code,
                                       "body": r.text[:300]})
            except requests.RequestException as e:
                api_errors.append({"row": i, "error": str(e)})
                preds["steward"].append(None)
                versions.append(None)
            times_ms.append(int(time.time() * 1000))
        t_served = time.time()
        # let a run started near the end finish
        deadline = time.time() + args.settle
        runs = {}
        while True:
            runs = s.get(base + "/v1/retrain", timeout=30).json()
            if not runs.get("running") or time.time() > deadline:
                break
            time.sleep(1)
        metrics_text = s.get(base + "/metrics", timeout=30).text
    finally:
        stop_daemon(proc)
    out["serve_secs"] = t_served - t_start
    out["wall_secs"] = time.time() - t_start
    out["api_errors"] = api_errors[:50]
    out["api_error_count"] = len(api_errors)
    out["runs"] = runs
    out["metrics_concept"] = [l for l in metrics_text.splitlines()
                              if "concept" in l and not l.startswith("#")]
    events, problems = parse_log(os.path.join(d, "daemon.log"))
    out["log_problems"] = problems[:30]
    out["log_problem_count"] = len(problems)

    # ---- scores
    ys = [y for _, y in served]

    def score(k, lo, hi):
        p = preds[k][lo:hi]
        t = ys[lo:hi]
        if task == "regression":
            return sum(abs((q if q is not None else 0.0) - v) for q, v in zip(p, t)) / len(t)
        if k == "steward":
            return sum(q == str(v) for q, v in zip(p, t)) / len(t)
        return sum(q == v for q, v in zip(p, t)) / len(t)

    lo = change + args.skip
    W0 = args.window
    out["metric"] = "mae" if task == "regression" else "accuracy"
    out["post"] = {k: score(k, lo, len(served)) for k in preds}
    out["pre_1000"] = {k: score(k, max(0, change - 1000), change) for k in preds}
    # score per block of --window served rows (block starts at served row b)
    out["curve"] = {k: [[b, score(k, b, min(b + W0, len(served)))]
                        for b in range(0, len(served), W0)] for k in preds}

    # recovery: first post-change index where the 500-row window (all post-change)
    # is back within tolerance of the pre-change level
    level = out["pre_1000"]["steward"]
    if task == "regression":
        err = [abs((q if q is not None else 0.0) - v) for q, v in zip(preds["steward"], ys)]
        ok = lambda m: m <= level * 1.05
    else:
        err = [1.0 if q == str(v) else 0.0 for q, v in zip(preds["steward"], ys)]
        ok = lambda m: m >= level - 0.02
    W = args.window
    rec = None
    acc = sum(err[change:change + W])
    for j in range(change + W - 1, len(served)):
        if j > change + W - 1:
            acc += err[j] - err[j - W]
        if ok(acc / W):
            rec = j - change + 1
            break
    out["recovery_labels"] = rec

    # ---- concept drift events
    ev = []
    for e in events:
        t = find_key(e, "time")
        ct = find_key(e, "change_time")
        ev.append({
            "time": t, "change_time": ct,
            "detector": find_key(e, "detector"),
            "labels": find_key(e, "labels"),
            "change_labels": find_key(e, "change_labels"),
            "error": find_key(e, "error"),
            "model_version": find_key(e, "model_version"),
            "row": row_at(times_ms, t) if isinstance(t, (int, float)) else None,
            "change_row": row_at(times_ms, ct) + 1 if isinstance(ct, (int, float)) else None,
        })
    # one log line may be repeated by several targets; dedupe on (time, detector)
    seen, uniq = set(), []
    for e in ev:
        key = (e["time"], e["detector"], e["change_time"])
        if key not in seen:
            seen.add(key)
            uniq.append(e)
    out["events"] = uniq
    out["false_alarms"] = sum(1 for e in uniq if e["row"] is not None and e["row"] < change)
    out["events_after_change"] = sum(1 for e in uniq if e["row"] is not None and e["row"] >= change)
    first = next((e for e in uniq if e["row"] is not None and e["row"] >= change), None)
    out["detection_delay_labels"] = first["row"] - change + 1 if first else None
    out["dated_change_row"] = first["change_row"] if first else None
    rl = runs.get("runs", []) if isinstance(runs, dict) else []
    out["runs_promoted"] = sum(1 for r in rl if str(r.get("state")) == "promoted")
    out["runs_total"] = len(rl)
    # versions used across the stream
    vs = []
    for i, v in enumerate(versions):
        if not vs or vs[-1][1] != v:
            vs.append((i, v))
    out["version_changes"] = vs
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)
    return out


# ----------------------------------------------------------------- main

def fmt(v, nd=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def mean(vals):
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=BIN, help="the steward binary (default: the release build)")
    ap.add_argument("--streams", nargs="+", default=["sea", "agrawal", "friedman"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--boot", type=int, default=3000, help="bootstrap rows (boot.csv)")
    ap.add_argument("--pre", type=int, default=3000, help="served rows before the change")
    ap.add_argument("--post", type=int, default=7000, help="served rows after the change")
    ap.add_argument("--skip", type=int, default=1000,
                    help="post-change rows left out of the post-change score")
    ap.add_argument("--window", type=int, default=500, help="recovery window")
    ap.add_argument("--settle", type=float, default=60,
                    help="seconds to wait at the end for a running retrain")
    ap.add_argument("--quick", action="store_true",
                    help="1 seed, boot 1000, pre 1500, post 2500, skip 500")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs")
    ap.add_argument("--json", help="write everything here")
    args = ap.parse_args()
    globals()["BIN"] = args.bin
    if args.quick:
        args.seeds = args.seeds[:1]
        args.boot, args.pre, args.post, args.skip = 1000, 1500, 2500, 500
    results = []
    for name in args.streams:
        for seed in args.seeds:
            r = run_one(name, seed, args)
            results.append(r)
            print(f"# {name} seed {seed}: {r['metric']} steward {fmt(r['post']['steward'])} "
                  f"linear {fmt(r['post']['river_linear'])} hat {fmt(r['post']['river_hat'])}; "
                  f"recovery {r['recovery_labels']}; events {len(r['events'])} "
                  f"(false {r['false_alarms']}, delay {r['detection_delay_labels']}, "
                  f"dated row {r['dated_change_row']} vs change {args.pre}); "
                  f"runs {r['runs_total']} promoted {r['runs_promoted']}; "
                  f"api errors {r['api_error_count']}; wall {r['wall_secs']:.0f}s",
                  file=sys.stderr, flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"args": vars(args), "results": results}, f, indent=1,
                              default=str)
    print(f"\nPost-change score over rows {args.skip}..{args.post} after the change "
          f"(accuracy; MAE for friedman), mean over seeds {args.seeds}\n")
    print("| stream | steward | River linear | River HAT | recovery labels | "
          "events per change (false alarms) | detection delay | promoted runs / runs |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.streams:
        rs = [r for r in results if r["stream"] == name]
        if not rs:
            continue
        recs = [r["recovery_labels"] for r in rs]
        rec = mean(recs)
        never = sum(1 for v in recs if v is None)
        rec_s = fmt(rec, 0) + (f" ({never} never)" if never else "")
        print(f"| {name} ({rs[0]['metric']}) | {fmt(mean([r['post']['steward'] for r in rs]))} | "
              f"{fmt(mean([r['post']['river_linear'] for r in rs]))} | "
              f"{fmt(mean([r['post']['river_hat'] for r in rs]))} | {rec_s} | "
              f"{fmt(mean([r['events_after_change'] for r in rs]), 2)} "
              f"({fmt(mean([r['false_alarms'] for r in rs]), 2)}) | "
              f"{fmt(mean([r['detection_delay_labels'] for r in rs]), 0)} | "
              f"{fmt(mean([r['runs_promoted'] for r in rs]), 2)} / "
              f"{fmt(mean([r['runs_total'] for r in rs]), 2)} |")


if __name__ == "__main__":
    main()
