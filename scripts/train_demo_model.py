"""Train and export the demo model shipped as ``onnxviz/data/digits_cnn.onnx``.

A LeNet-style, fully convolutional CNN (Conv-BN-ReLU ×3, global average pooling, linear head)
trained on scikit-learn's bundled handwritten digits (1,797 8×8 images, upsampled to 32×32 with
random shifts). Global pooling makes height and width dynamic, so ``onnxviz demo`` can show its
feature maps on a full-size photograph. Exported with torch.onnx's TorchScript exporter, whose
node names (``/conv1/Conv``) carry the module names, through onnxviz's converter (layer names and
folded BatchNorms recorded in the file). Deterministic; about 20 s on 2 CPU cores.

Needs: torch, scikit-learn (``pip install torch==2.13.0 scikit-learn``).
Run:   python scripts/train_demo_model.py [--out onnxviz/data/digits_cnn.onnx]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5, padding=2)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 5, padding=2)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        x = F.relu(self.bn3(self.conv3(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def digits_32() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0  # 0..1, white strokes on black
    x = F.interpolate(x, size=(24, 24), mode="bilinear", align_corners=False)
    x = F.pad(x, (4, 4, 4, 4))  # 32×32 with a border to shift within
    return x, torch.tensor(data.target)


def shift(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    dx, dy = (int(v) for v in torch.randint(-3, 4, (2,), generator=gen))
    return torch.roll(batch, shifts=(dy, dx), dims=(2, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "onnxviz" / "data" / "digits_cnn.onnx"))
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x, y = digits_32()
    perm = torch.randperm(len(x), generator=gen)
    train, test = perm[:1500], perm[1500:]
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps = args.epochs * ((len(train) + 63) // 64)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for epoch in range(args.epochs):
        model.train()
        order = train[torch.randperm(len(train), generator=gen)]
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            loss = F.cross_entropy(model(shift(x[idx], gen)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, held-out accuracy {acc:.3f}")

    model.eval()
    # Through onnxviz's own converter, so the file carries the layer names and which BatchNorm
    # the exporter folded into which conv; height and width stay dynamic.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from onnxviz.converters import convert

    conversion = convert(model, args.out, example_inputs=x[:1], exporter="torchscript", opset=17, dynamic_size=True)
    print(conversion.summary())
    print(f"wrote {args.out} (held-out accuracy {acc:.3f} on {len(test)} digits)")


if __name__ == "__main__":
    main()
