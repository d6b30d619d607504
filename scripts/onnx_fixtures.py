#!/usr/bin/env python3
"""Generate the ONNX fixtures used by the tests of steward's ONNX importer.

Usage (from the repository root):

    python3 scripts/onnx_fixtures.py

Writes into tests/fixtures/onnx/:

  NAME.onnx            the model
  NAME.csv             synthetic data: header f0..f{k-1},label; ~300 rows
  NAME.expected.json   onnxruntime (CPUExecutionProvider) outputs on the first
                       50 CSV rows, plus metadata (opset, producer, input/output
                       names, op types, classes)
  refuse_*.onnx        models the importer must refuse (no CSV of their own;
                       all take 6 features and pair with torch_relu_opset13.csv)
  README.md            what each file is, and the library versions used

Determinism
-----------
* All data comes from seeded numpy Generators.  Every feature value (and every
  regression label) is quantised to a multiple of 2**-10, so it is exactly
  representable as float32 AND has a short exact decimal expansion: the CSV
  text parses to the identical value whether a reader parses it as f32 or as
  f64 (the script asserts this).  Rows in expected.json use the same values.
* torch: torch.manual_seed per model, torch.use_deterministic_algorithms(True),
  one intra-op thread, full-batch Adam.  onnxruntime: one thread.
* Rerunning on the same machine/library versions reproduces every file
  byte-for-byte (checked by running twice and diffing).  Across machines the
  torch-trained weights and onnxruntime outputs may differ in the last ulp
  (different SIMD kernels), so tests should compare with a tolerance.

Exporter
--------
The installed torch (2.9+) defaults to the new dynamo/torch.export-based ONNX
exporter, which needs `onnxscript` (not installed).  This script therefore
passes `dynamo=False` and uses the classic TorchScript-based exporter, which
emits one Gemm per nn.Linear (node names like "/net/0/Gemm").

sklearn models are converted with skl2onnx.convert_sklearn, input name
"float_input", type FloatTensorType([None, k]).
"""

import io
import json
import os
import sys
import warnings

import numpy as np

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import version_converter  # noqa: E402
import sklearn  # noqa: E402
import skl2onnx  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from skl2onnx import convert_sklearn  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

warnings.filterwarnings("ignore", category=ConvergenceWarning)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "onnx")

N_ROWS = 300
N_EXPECTED = 50
QUANT = 1024.0  # values are multiples of 1/1024

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------

def quantise(x):
    """Round to a multiple of 1/1024 and return float32 (exactly representable)."""
    q = np.round(np.asarray(x, dtype=np.float64) * QUANT) / QUANT + 0.0  # +0.0: no -0.0
    f = q.astype(np.float32)
    assert np.array_equal(f.astype(np.float64), q), "quantised value not exact in float32"
    return f


def features(rng, specs, n=N_ROWS):
    """specs: list of (mean, std); returns (X float32 [n,k], Z standardised float64)."""
    raw = np.stack([rng.normal(m, s, size=n) for (m, s) in specs], axis=1)
    X = quantise(raw)
    mu = np.array([m for m, _ in specs])
    sd = np.array([s for _, s in specs])
    Z = (X.astype(np.float64) - mu) / sd
    return X, Z


def fmt(v):
    """Exact, short decimal text for a float32/float64 value."""
    s = repr(float(v))
    assert float(s) == float(v) and float(np.float32(s)) == float(v), s
    return s


def write_csv(path, X, y, regression):
    k = X.shape[1]
    lines = [",".join([f"f{i}" for i in range(k)] + ["label"])]
    for row, lab in zip(X, y):
        cells = [fmt(v) for v in row]
        cells.append(fmt(lab) if regression else str(int(lab)))
        lines.append(",".join(cells))
    with open(path, "w", newline="\n") as fh:
        fh.write("\n".join(lines) + "\n")


# --------------------------------------------------------------------------
# json / inference helpers
# --------------------------------------------------------------------------

def jnum(v):
    return json.dumps(float(v))


def jvalue(v, indent="  "):
    """Compact JSON: lists of numbers inline, list of rows one row per line."""
    if isinstance(v, list) and v and isinstance(v[0], list):
        inner = (",\n" + indent + "  ").join(
            "[" + ", ".join(jnum(x) for x in row) + "]" for row in v)
        return "[\n" + indent + "  " + inner + "\n" + indent + "]"
    if isinstance(v, list) and v and isinstance(v[0], (float, np.floating)):
        return "[" + ", ".join(jnum(x) for x in v) + "]"
    return json.dumps(v)


def write_json(path, obj):
    body = ",\n".join(f"  {json.dumps(k)}: {jvalue(v)}" for k, v in obj.items())
    with open(path, "w", newline="\n") as fh:
        fh.write("{\n" + body + "\n}\n")


def session(path):
    """path: a file name or serialized model bytes."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def softmax64(logits):
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def default_opset(model):
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def op_types(model):
    return sorted({n.op_type for n in model.graph.node})


def rows_f32(a):
    return [[float(np.float32(x)) for x in r] for r in np.asarray(a, dtype=np.float32)]


def save_model(model, path):
    onnx.checker.check_model(model, full_check=True)
    with open(path, "wb") as fh:
        fh.write(model.SerializeToString())


def expected(name, model, X, classes, output, kind, ref, extra=None):
    """Run onnxruntime on the first N_EXPECTED rows and write NAME.expected.json.

    kind: "logits" (raw logits tensor), "proba" (probability tensor),
          "zipmap" (list of dicts), "regression".
    ref: the training framework's own outputs on the same rows (torch module
         or sklearn predict_proba/predict); onnxruntime must agree to 1e-4.
    Returns the max abs difference to ref.
    """
    path = os.path.join(OUT, name + ".onnx")
    sess = session(path)
    inp = sess.get_inputs()[0].name
    rows = X[:N_EXPECTED]
    names = [o.name for o in sess.get_outputs()]
    res = dict(zip(names, sess.run(None, {inp: rows})))
    label_output = None
    if isinstance(output, int):
        # skl2onnx classifiers: outputs are (label, probabilities); their names
        # depend on the options ("output_label"/"output_probability" with
        # ZipMap, "label"/"probabilities" for a pipeline with zipmap=False).
        label_output, output = names[0], names[output]
    out = res[output]
    obj = {
        "onnx": name + ".onnx",
        "csv": name + ".csv",
        "opset": default_opset(model),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "task": "regression" if kind == "regression" else "classification",
        "input": inp,
        "output": output,
        "graph_outputs": names,
        "ops": op_types(model),
    }
    obj.update(extra or {})
    if classes is not None:
        obj["classes"] = [str(c) for c in classes]
    obj["rows"] = rows_f32(rows)
    if kind == "zipmap":
        out = np.array([[d[c] for c in classes] for d in out], dtype=np.float32)
    out = np.asarray(out, dtype=np.float32)
    diff = float(np.max(np.abs(out.astype(np.float64) - np.asarray(ref, dtype=np.float64).reshape(out.shape))))
    assert diff < 1e-4, f"{name}: onnxruntime differs from framework by {diff}"
    obj["outputs"] = rows_f32(out)
    if kind == "logits":
        obj["probabilities"] = rows_f32(softmax64(out))
    elif kind in ("proba", "zipmap"):
        obj["probabilities"] = rows_f32(out)
    if classes is not None:
        if label_output is not None:
            obj["label_output"] = label_output
            obj["labels"] = [str(v) for v in np.asarray(res[label_output]).reshape(-1).tolist()]
        else:
            obj["labels"] = [str(classes[i]) for i in np.argmax(out, axis=1)]
    write_json(os.path.join(OUT, name + ".expected.json"), obj)
    return diff


# --------------------------------------------------------------------------
# torch
# --------------------------------------------------------------------------

def torch_export(module, k, path, opset, output_names):
    module.eval()
    buf = io.BytesIO()
    dyn = {"input": {0: "batch"}}
    for o in output_names:
        dyn[o] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            module, (torch.zeros(2, k),), buf,
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=output_names,
            dynamic_axes=dyn,
            do_constant_folding=True,
        )
    model = onnx.load_from_string(buf.getvalue())
    save_model(model, path)
    return model


def train_torch(net, Xt, yt, loss_fn, steps=400, lr=0.01):
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(net(Xt), yt)
        loss.backward()
        opt.step()
    net.eval()
    return float(loss)


class Normalised(nn.Module):
    """(x - mean) / std with registered buffers, then the MLP."""

    def __init__(self, mean, std, net):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.net = net

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def fx_torch_relu(notes):
    name = "torch_relu_opset13"
    rng = np.random.default_rng(13)
    specs = [(50, 10), (0, 1), (100, 25), (-5, 2), (0, 0.2), (10, 3)]
    X, Z = features(rng, specs)
    W = rng.normal(0, 1, size=(6, 3))
    s = Z @ W + 0.8 * np.stack([Z[:, 0] * Z[:, 1], np.sin(2 * Z[:, 2]), Z[:, 3] ** 2 - 1], axis=1)
    y = np.argmax(s + 0.3 * rng.normal(size=s.shape), axis=1)
    write_csv(os.path.join(OUT, name + ".csv"), X, y, False)

    mean = X.astype(np.float64).mean(axis=0).astype(np.float32)
    std = X.astype(np.float64).std(axis=0).astype(np.float32)
    torch.manual_seed(13)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    Xs = torch.tensor((X - mean) / std, dtype=torch.float32)
    train_torch(net, Xs, torch.tensor(y), nn.CrossEntropyLoss())
    module = Normalised(mean, std, net)
    with torch.no_grad():
        acc = (module(torch.tensor(X)).argmax(1).numpy() == y).mean()
    model = torch_export(module, 6, os.path.join(OUT, name + ".onnx"), 13, ["logits"])
    with torch.no_grad():
        ref = module(torch.tensor(X[:N_EXPECTED])).numpy()
    d = expected(name, model, X, [0, 1, 2], "logits", "logits", ref)
    notes[name] = f"train acc {acc:.3f}; |ort-torch| {d:.1e}"


def fx_torch_tanh(notes):
    name = "torch_tanh_opset17"
    rng = np.random.default_rng(17)
    specs = [(0, 1), (1, 2), (-1, 1.5), (0.5, 0.5)]
    X, Z = features(rng, specs)
    s = Z[:, 0] * Z[:, 1] + Z[:, 2] - 0.5 * Z[:, 3] + 0.3 * rng.normal(size=N_ROWS)
    y = (s > 0).astype(np.int64)
    write_csv(os.path.join(OUT, name + ".csv"), X, y, False)

    torch.manual_seed(17)
    net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.LeakyReLU(0.1), nn.Linear(16, 2))
    train_torch(net, torch.tensor(X), torch.tensor(y), nn.CrossEntropyLoss())
    module = nn.Sequential(*list(net), nn.Softmax(dim=1))
    with torch.no_grad():
        acc = (module(torch.tensor(X)).argmax(1).numpy() == y).mean()
    model = torch_export(module, 4, os.path.join(OUT, name + ".onnx"), 17, ["probabilities"])
    with torch.no_grad():
        ref = module(torch.tensor(X[:N_EXPECTED])).numpy()
    d = expected(name, model, X, [0, 1], "probabilities", "proba", ref)
    notes[name] = f"train acc {acc:.3f}; |ort-torch| {d:.1e}"


def fx_torch_regression(notes):
    name = "torch_regression_opset17"
    rng = np.random.default_rng(171)
    specs = [(0, 1), (2, 1), (-1, 2), (0, 0.5), (1, 1)]
    X, _ = features(rng, specs)
    x = X.astype(np.float64)
    yv = 2 * x[:, 0] - x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + np.maximum(x[:, 4], 0) + 0.1 * rng.normal(size=N_ROWS)
    y = quantise(yv)
    write_csv(os.path.join(OUT, name + ".csv"), X, y, True)

    torch.manual_seed(171)
    net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 1))
    loss = train_torch(net, torch.tensor(X), torch.tensor(y).reshape(-1, 1), nn.MSELoss(), steps=500)
    model = torch_export(net, 5, os.path.join(OUT, name + ".onnx"), 17, ["prediction"])
    with torch.no_grad():
        ref = net(torch.tensor(X[:N_EXPECTED])).numpy()
    d = expected(name, model, X, None, "prediction", "regression", ref)
    notes[name] = f"train mse {loss:.4f} (label var {np.var(y):.3f}); |ort-torch| {d:.1e}"


def fx_refusals(notes):
    torch.manual_seed(99)

    class ConvNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(1, 4, kernel_size=3)
            self.flatten = nn.Flatten()
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            return self.fc(self.flatten(self.conv(x.reshape(-1, 1, 6))))

    torch_export(ConvNet(), 6, os.path.join(OUT, "refuse_conv.onnx"), 13, ["logits"])

    class SinNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(6, 16)
            self.fc2 = nn.Linear(16, 3)

        def forward(self, x):
            return self.fc2(torch.sin(self.fc1(x)))

    torch_export(SinNet(), 6, os.path.join(OUT, "refuse_unsupported_op.onnx"), 17, ["logits"])

    class TwoOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(6, 16)
            self.fc2 = nn.Linear(16, 3)

        def forward(self, x):
            h = torch.relu(self.fc1(x))
            return self.fc2(h), h

    torch_export(TwoOut(), 6, os.path.join(OUT, "refuse_two_outputs.onnx"), 13, ["logits", "hidden"])
    for n in ("refuse_conv", "refuse_unsupported_op", "refuse_two_outputs"):
        notes[n] = "untrained; pair with torch_relu_opset13.csv"


# --------------------------------------------------------------------------
# sklearn
# --------------------------------------------------------------------------

def raise_opset(model, target):
    """Return (model declaring default-domain opset >= target, declared version).

    skl2onnx treats target_opset as a maximum and records the lowest opset its
    nodes need (9 for binary LogisticRegression, 14 for the binary MLP
    pipeline, 16 for MLPRegressor).  The fixtures are named after the opset
    they declare, so such models are run through onnx.version_converter
    (which leaves ai.onnx.ml nodes alone).  We require the converter to leave
    every node unchanged (no adapters needed), and then only raise the
    declared version on the original model, keeping its inputs/outputs free
    of the converter's inferred value_info/"unk__" dims; the caller also
    checks that onnxruntime's outputs are unchanged.
    """
    declared = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if declared >= target:
        return model, declared
    converted = version_converter.convert_version(model, target)
    assert [n.SerializeToString() for n in converted.graph.node] == \
        [n.SerializeToString() for n in model.graph.node], "version converter changed nodes"
    upgraded = onnx.ModelProto()
    upgraded.CopyFrom(model)
    for o in upgraded.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = target
    return upgraded, declared


def canonicalise(model, graph_name):
    """skl2onnx names the graph with a random uuid and emits opset_import in
    set order; make both deterministic (duplicates are kept as emitted)."""
    model.graph.name = graph_name
    entries = sorted(((o.domain, o.version) for o in model.opset_import))
    del model.opset_import[:]
    for d, v in entries:
        model.opset_import.add(domain=d, version=v)


def run_all(model_bytes, X):
    return session(model_bytes).run(None, {"float_input": X})


def same_outputs(a, b):
    for x, y in zip(a, b):
        if isinstance(x, list):  # ZipMap: list of dicts
            assert x == y
        else:
            assert np.array_equal(np.asarray(x), np.asarray(y))


def skl_convert(est, X, path, opset, options=None):
    ml = 1 if opset <= 13 else 3
    name = os.path.basename(path)[:-5]
    model = convert_sklearn(
        est,
        initial_types=[("float_input", FloatTensorType([None, X.shape[1]]))],
        target_opset={"": opset, "ai.onnx.ml": ml},
        options=options,
        name=name,
    )
    canonicalise(model, name)
    upgraded, declared = raise_opset(model, opset)
    if upgraded is not model:
        same_outputs(run_all(model.SerializeToString(), X), run_all(upgraded.SerializeToString(), X))
    save_model(upgraded, path)
    return upgraded, {"converter_opset": declared}


def fx_skl_mlp_multiclass(notes):
    name = "skl_scaler_mlpclassifier_opset13"
    rng = np.random.default_rng(23)
    specs = [(50, 10), (0, 1), (200, 40), (-3, 1), (0, 5)]
    X, Z = features(rng, specs)
    W = rng.normal(0, 1, size=(5, 3))
    s = Z @ W + 0.7 * np.stack([np.tanh(Z[:, 0] * Z[:, 2]), Z[:, 1] ** 2 - 1, np.cos(Z[:, 4])], axis=1)
    y = np.argmax(s + 0.3 * rng.normal(size=s.shape), axis=1)
    write_csv(os.path.join(OUT, name + ".csv"), X, y, False)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0))
    pipe.fit(X, y)
    model, extra = skl_convert(pipe, X, os.path.join(OUT, name + ".onnx"), 13)
    d = expected(name, model, X, list(pipe.classes_), 1, "zipmap", pipe.predict_proba(X[:N_EXPECTED]), extra)
    notes[name] = f"train acc {pipe.score(X, y):.3f}; zipmap on; |ort-skl| {d:.1e}"


def fx_skl_mlp_binary(notes):
    name = "skl_scaler_mlpclassifier_binary_opset17"
    rng = np.random.default_rng(27)
    specs = [(50, 10), (0, 1), (5, 2), (-20, 4)]
    X, Z = features(rng, specs)
    s = Z[:, 0] - Z[:, 1] * Z[:, 2] + 0.5 * Z[:, 3] + 0.3 * rng.normal(size=N_ROWS)
    y = (s > 0).astype(np.int64)
    write_csv(os.path.join(OUT, name + ".csv"), X, y, False)
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0)
    pipe = make_pipeline(StandardScaler(), clf)
    pipe.fit(X, y)
    model, extra = skl_convert(pipe, X, os.path.join(OUT, name + ".onnx"), 17, options={id(clf): {"zipmap": False}})
    d = expected(name, model, X, list(pipe.classes_), 1, "proba", pipe.predict_proba(X[:N_EXPECTED]), extra)
    notes[name] = f"train acc {pipe.score(X, y):.3f}; zipmap off; |ort-skl| {d:.1e}"


def fx_skl_mlp_regressor(notes):
    name = "skl_mlpregressor_opset17"
    rng = np.random.default_rng(37)
    specs = [(0, 1), (1, 0.5), (-1, 1), (0, 2)]
    X, _ = features(rng, specs)
    x = X.astype(np.float64)
    y = quantise(np.sin(x[:, 0]) + x[:, 1] * x[:, 2] + 0.3 * x[:, 3] + 0.1 * rng.normal(size=N_ROWS))
    write_csv(os.path.join(OUT, name + ".csv"), X, y, True)
    reg = MLPRegressor(hidden_layer_sizes=(16, 8), activation="tanh", max_iter=500, random_state=0)
    reg.fit(X, y)
    model, extra = skl_convert(reg, X, os.path.join(OUT, name + ".onnx"), 17)
    d = expected(name, model, X, None, "variable", "regression", reg.predict(X[:N_EXPECTED]), extra)
    notes[name] = f"train R2 {reg.score(X, y):.3f}; |ort-skl| {d:.1e}"


def fx_skl_logreg(notes):
    name = "skl_logreg_opset13"
    rng = np.random.default_rng(43)
    specs = [(0, 1), (2, 1.5), (-1, 0.5)]
    X, Z = features(rng, specs)
    s = 1.5 * Z[:, 0] - Z[:, 1] + 0.8 * Z[:, 2] + 0.5 * rng.normal(size=N_ROWS)
    y = (s > 0).astype(np.int64)
    write_csv(os.path.join(OUT, name + ".csv"), X, y, False)
    clf = LogisticRegression()
    clf.fit(X, y)
    model, extra = skl_convert(clf, X, os.path.join(OUT, name + ".onnx"), 13)
    d = expected(name, model, X, list(clf.classes_), 1, "zipmap", clf.predict_proba(X[:N_EXPECTED]), extra)
    notes[name] = f"train acc {clf.score(X, y):.3f}; zipmap on; |ort-skl| {d:.1e}"


def fx_skl_logreg_multiclass(notes):
    name = "skl_logreg_multiclass_opset17"
    rng = np.random.default_rng(47)
    specs = [(0, 1), (1, 2), (-2, 1), (0.5, 0.5)]
    X, Z = features(rng, specs)
    W = rng.normal(0, 1, size=(4, 3))
    s = Z @ W
    y = np.argmax(s + 0.3 * rng.normal(size=s.shape), axis=1)
    write_csv(os.path.join(OUT, name + ".csv"), X, y, False)
    clf = LogisticRegression()
    clf.fit(X, y)
    model, extra = skl_convert(clf, X, os.path.join(OUT, name + ".onnx"), 17, options={id(clf): {"zipmap": False}})
    d = expected(name, model, X, list(clf.classes_), 1, "proba", clf.predict_proba(X[:N_EXPECTED]), extra)
    notes[name] = f"train acc {clf.score(X, y):.3f}; zipmap off; |ort-skl| {d:.1e}"


# --------------------------------------------------------------------------
# README / summary
# --------------------------------------------------------------------------

DESCRIPTIONS = [
    ("torch_relu_opset13", "PyTorch MLP 6-16-16-3 (ReLU), 3 classes, trained on standardised data but with `(x-mean)/std` buffers inside the graph (`/Sub`, `/Div` before `/net/net.0/Gemm`), so it takes RAW features. Output: raw logits `logits` [batch,3] (expected.json also has `probabilities` = softmax in f64, rounded to f32)."),
    ("torch_tanh_opset17", "PyTorch MLP 4-16-16-2: Gemm, Tanh, Gemm, LeakyRelu(0.1), Gemm, Softmax(axis=1); binary; output `probabilities` [batch,2]."),
    ("torch_regression_opset17", "PyTorch 5-16-1 (ReLU) regressor; output `prediction` [batch,1]."),
    ("skl_scaler_mlpclassifier_opset13", "skl2onnx StandardScaler + MLPClassifier(16,), 3 classes, ZipMap on: Scaler (ai.onnx.ml) then MatMul/Add/Relu/MatMul/Add/Softmax; outputs `output_label` int64 [N] and `output_probability` seq(map(int64,float))."),
    ("skl_scaler_mlpclassifier_binary_opset17", "skl2onnx StandardScaler + MLPClassifier(16,), binary, zipmap=False: last layer has ONE unit -> Sigmoid, Sub(1, p), Concat -> `probabilities` float [N,2]; label output is `label`. skl2onnx declared opset 14; raised to 17."),
    ("skl_mlpregressor_opset17", "skl2onnx MLPRegressor(16,8, tanh), no scaler: Cast, (MatMul, Add, Tanh)x2, MatMul, Add, Reshape; output `variable` [N,1]. skl2onnx declared opset 16; raised to 17."),
    ("skl_logreg_opset13", "skl2onnx LogisticRegression, binary: LinearClassifier (2 coefficient rows -w/+w, post_transform LOGISTIC), Cast, ZipMap; outputs `output_label`, `output_probability`. skl2onnx declared opset 9; raised to 13."),
    ("skl_logreg_multiclass_opset17", "skl2onnx LogisticRegression, 3 classes (multinomial), zipmap=False: LinearClassifier (post_transform SOFTMAX, multi_class=1) then Normalizer(L1); outputs `label`, `probabilities`. Note: opset_import lists the default domain TWICE (both 17), exactly as skl2onnx wrote it."),
    ("refuse_conv", "Refusal (.onnx only): Constant, Reshape [-1,1,6], Conv `/conv/Conv` (1-D, 4 channels, k=3), Flatten, Gemm. Pair with torch_relu_opset13.csv."),
    ("refuse_unsupported_op", "Refusal (.onnx only): Gemm, Sin `/Sin`, Gemm (opset 17). Pair with torch_relu_opset13.csv."),
    ("refuse_two_outputs", "Refusal (.onnx only): two float outputs `logits` [batch,3] and `hidden` [batch,16] (the Relu output, also fed to the 2nd Gemm). Pair with torch_relu_opset13.csv."),
]


def write_readme():
    lines = [
        "# ONNX importer fixtures",
        "",
        "Generated by `python3 scripts/onnx_fixtures.py` (deterministic: seeded data,",
        "torch deterministic algorithms, single-threaded training/inference). Do not edit by hand.",
        "",
        "Each `NAME` below has `NAME.onnx`, `NAME.csv` (header `f0..f{k-1},label`, 300 rows,",
        "values are multiples of 2^-10 so the text is exact in both f32 and f64) and",
        "`NAME.expected.json` (onnxruntime CPU outputs on the first 50 CSV rows: `rows`,",
        "`outputs`; classifiers also `classes`, `probabilities`, `labels`; plus `opset`,",
        "`producer`, `task`, `input`, `output`, `graph_outputs`, `ops`; classifiers from skl2onnx",
        "also `label_output`; skl2onnx models also `converter_opset`, the default-domain opset",
        "skl2onnx itself declared before the script raised it to the one in the file name).",
        "`classes` are strings in output-column order; `labels` are onnxruntime's predicted",
        "labels (argmax for torch). `refuse_*` files are `.onnx` only.",
        "",
    ]
    for n, d in DESCRIPTIONS:
        lines.append(f"- `{n}`: {d}")
    lines += [
        "",
        "Torch models use the classic TorchScript exporter (`dynamo=False`; the dynamo exporter",
        "needs onnxscript): each nn.Linear is one Gemm (transB=1, weight [out,in]).",
        "skl2onnx MLPs use MatMul + Add (weight [in,out]). Node names are not reliable",
        "(skl2onnx names its Softmax/Sigmoid node `Relu1`); dispatch on op_type.",
        "",
        "Versions used:",
        "",
        f"- python {sys.version.split()[0]}, numpy {np.__version__}",
        f"- torch {torch.__version__}",
        f"- scikit-learn {sklearn.__version__}",
        f"- skl2onnx {skl2onnx.__version__}",
        f"- onnx {onnx.__version__}",
        f"- onnxruntime {ort.__version__}",
        "",
    ]
    with open(os.path.join(OUT, "README.md"), "w", newline="\n") as fh:
        fh.write("\n".join(lines))


def summary(notes):
    print(f"{'file':<46} {'bytes':>7}  ops / notes")
    total = 0
    for fn in sorted(os.listdir(OUT)):
        path = os.path.join(OUT, fn)
        size = os.path.getsize(path)
        total += size
        extra = ""
        if fn.endswith(".onnx"):
            m = onnx.load(path)
            onnx.checker.check_model(m, full_check=True)
            sess = session(path)  # must load in onnxruntime
            ins = [(i.name, i.shape) for i in sess.get_inputs()]
            outs = [(o.name, o.shape) for o in sess.get_outputs()]
            extra = f"opset {default_opset(m)}: {' '.join(n.op_type for n in m.graph.node)}"
            extra += f"  in={ins} out={outs}"
            base = fn[:-5]
            if base in notes:
                extra += f"  [{notes[base]}]"
        print(f"{fn:<46} {size:>7}  {extra}")
    print(f"{'total':<46} {total:>7}")


def main():
    os.makedirs(OUT, exist_ok=True)
    notes = {}
    fx_torch_relu(notes)
    fx_torch_tanh(notes)
    fx_torch_regression(notes)
    fx_skl_mlp_multiclass(notes)
    fx_skl_mlp_binary(notes)
    fx_skl_mlp_regressor(notes)
    fx_skl_logreg(notes)
    fx_skl_logreg_multiclass(notes)
    fx_refusals(notes)
    write_readme()
    summary(notes)


if __name__ == "__main__":
    main()
