"""docs/MODELS.md, "I have a PyTorch MLP": train a 4-32-16-3 MLP (ReLU, then
tanh) on the penguins' measurements, with the standardisation inside the
module, and export it with torch.onnx.export. Writes OUT/penguins_torch.onnx
and OUT/penguins.csv.

    python3 scripts/walkthrough/torch_mlp.py OUT
"""

import pathlib
import sys

import torch

from common import penguins, write_csv

out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
X, y, classes = penguins()


class PenguinNet(torch.nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 32),
            torch.nn.ReLU(),
            torch.nn.Linear(32, 16),
            torch.nn.Tanh(),
            torch.nn.Linear(16, len(classes)),
        )

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


model = PenguinNet(X.mean(0), X.std(0))
xt, yt = torch.tensor(X), torch.tensor(y)
opt = torch.optim.Adam(model.parameters(), lr=0.01)
for _ in range(300):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(xt), yt)
    loss.backward()
    opt.step()
model.eval()
accuracy = (model(xt).argmax(1) == yt).float().mean().item()
print(f"training accuracy {accuracy:.3f}, classes {classes}")

torch.onnx.export(
    model,
    torch.zeros(1, 4),
    out / "penguins_torch.onnx",
    input_names=["measurements"],
    output_names=["logits"],
    dynamic_axes={"measurements": {0: "batch"}, "logits": {0: "batch"}},
    opset_version=17,
    dynamo=False,
)
write_csv(out / "penguins.csv", X, y, classes)
print(f"wrote {out / 'penguins_torch.onnx'} and {out / 'penguins.csv'}")
