"""The seeds' CNNs, a ResNet-style network and a MobileNet-style block, in PyTorch (tests only)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn



class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) if stride != 1 or cin != cout else None
        )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + identity)


class TinyResNet(nn.Module):
    """ResNet-style: stem, basic blocks with a downsample branch, and a MobileNet-style dw/pw pair."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(Block(8, 8), Block(8, 16, 2))
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 12, 1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.layer1(self.relu(self.bn1(self.conv1(x))))
        x = self.pw(torch.relu(self.dw(x)))
        return self.fc(x.mean((2, 3)))


class SeedRandomCNN(nn.Module):
    """Seed 000: four Conv/ReLU/MaxPool layers, 9 filters, kernels 5/5/5/3, pools 4/3/2."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 9, 5), nn.ReLU(), nn.MaxPool2d(4),
            nn.Conv2d(9, 9, 5), nn.ReLU(), nn.MaxPool2d(3),
            nn.Conv2d(9, 9, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(9, 9, 3), nn.ReLU(),
        )  # fmt: skip

    def forward(self, x):
        return self.features(x)


class VGG16Style(nn.Module):
    """Seed 001: VGG16's conv stack on 48×48×3 with a small dense head."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for filters, n in [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]:
            for _ in range(n):
                layers += [nn.Conv2d(cin, filters, 3, padding=1), nn.ReLU()]
                cin = filters
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """Seed 002: LeNet-5 on 28×28×1."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 5, padding=2)
        self.c3 = nn.Conv2d(6, 16, 5)
        self.c5 = nn.Conv2d(16, 120, 5)
        self.pool = nn.AvgPool2d(2)
        self.f6 = nn.Linear(120, 84)
        self.out = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(torch.tanh(self.c1(x)))
        x = self.pool(torch.tanh(self.c3(x)))
        x = torch.tanh(self.c5(x)).flatten(1)
        return self.out(torch.tanh(self.f6(x)))


class CatsVsDogs(nn.Module):
    """Seed 004: Conv 16/32/64 'same' + MaxPool + Dropout + Dense on 150×150×3."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.2)
        self.fc1 = nn.Linear(64 * 18 * 18, 32)
        self.fc2 = nn.Linear(32, 1)

    def forward(self, x):
        x = self.drop(self.pool(torch.relu(self.conv1(x))))
        x = self.pool(torch.relu(self.conv2(x)))
        x = self.drop(self.pool(torch.relu(self.conv3(x))))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class InvertedResidual(nn.Module):
    """MobileNetV2-style block: expand 1×1 → depthwise 3×3 → project 1×1, BN + ReLU6, residual."""

    def __init__(self, c: int = 16, expand: int = 4) -> None:
        super().__init__()
        h = c * expand
        self.expand = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.project(self.depthwise(self.expand(x)))


class MobileNetStyle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.blocks = nn.Sequential(InvertedResidual(), InvertedResidual())
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


# name → (factory, input shape)
MODELS = {
    "seed_random_cnn": (SeedRandomCNN, (1, 3, 300, 451)),
    "vgg16_style": (VGG16Style, (1, 3, 48, 48)),
    "lenet5": (LeNet5, (1, 1, 28, 28)),
    "cats_vs_dogs": (CatsVsDogs, (1, 3, 150, 150)),
    "resnet_style": (TinyResNet, (1, 3, 32, 32)),
    "mobilenet_style": (MobileNetStyle, (1, 3, 32, 32)),
}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    net = MODELS[name][0]()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding matters
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def hooked_outputs(net: nn.Module, x: torch.Tensor) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every named module's output (forward hooks) and the network's output, as numpy arrays."""
    outs: dict[str, np.ndarray] = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, o, n=n: outs.__setitem__(n, o.detach().numpy().copy()))
        for n, m in net.named_modules()
        if n
    ]
    with torch.no_grad():
        y = net(x).numpy()
    for h in handles:
        h.remove()
    return outs, y


def hooked_calls(net: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Every leaf module call's output, named as onnxviz names module calls: ``pool``, ``pool:2``..."""
    outs: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}

    def hook(_m, _i, o, n):
        counts[n] = counts.get(n, 0) + 1
        outs[n if counts[n] == 1 else f"{n}:{counts[n]}"] = o.detach().numpy().copy()

    handles = [m.register_forward_hook(lambda _m, _i, o, n=n: hook(_m, _i, o, n)) for n, m in net.named_modules() if n and not list(m.children())]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return outs


def lenet5() -> nn.Module:
    """Factory for ``tests.torch_models:lenet5`` specs."""
    return build("lenet5")
