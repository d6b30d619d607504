"""docs/MODELS.md, "I have a scikit-learn pipeline": StandardScaler +
MLPClassifier on the penguins' measurements, converted with skl2onnx. Writes
OUT/penguins_sklearn.onnx and OUT/penguins.csv.

    python3 scripts/walkthrough/sklearn_pipeline.py OUT
"""

import pathlib
import sys

from skl2onnx import to_onnx
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from common import penguins, write_csv

out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
out.mkdir(parents=True, exist_ok=True)
X, y, classes = penguins()
labels = [classes[i] for i in y]
pipe = make_pipeline(
    StandardScaler(),
    MLPClassifier(hidden_layer_sizes=(16,), max_iter=2000, random_state=0),
)
pipe.fit(X, labels)
print(f"training accuracy {pipe.score(X, labels):.3f}, classes {[str(c) for c in pipe.classes_]}")
onx = to_onnx(pipe, X[:1], target_opset=17)
(out / "penguins_sklearn.onnx").write_bytes(onx.SerializeToString())
write_csv(out / "penguins.csv", X, y, classes)
print(f"wrote {out / 'penguins_sklearn.onnx'} and {out / 'penguins.csv'}")
