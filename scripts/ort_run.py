#!/usr/bin/env python3
"""Runs an ONNX file in onnxruntime on rows given as JSON and prints its first
output as JSON: the independent runtime the tests check `steward export` with.

    python3 scripts/ort_run.py MODEL.onnx ROWS.json   # ROWS.json: [[f32, ...], ...]
"""
import json
import sys

import numpy as np
import onnxruntime as ort

model, rows = sys.argv[1], sys.argv[2]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
x = np.array(json.load(open(rows)), dtype=np.float32)
out = session.run(None, {name: x})[0]
json.dump(np.asarray(out, dtype=np.float64).tolist(), sys.stdout)
