"""Benchmark models written out in PyTorch (torchvision does not import with the CPU torch here).

ResNet-50 (torchvision's layout: Bottleneck blocks [3, 4, 6, 3], 53 convs), a VGG-16-style
network, a MobileNetV2-style network and LeNet-5; random weights, eval mode.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["resnet50", "vgg16", "mobilenet", "lenet5", "MODELS"]


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet50(nn.Module):
    """torchvision's ResNet-50 layout; ``width`` (64 in torchvision) scales every stage's channels,
    so that tests can build the same topology small."""

    def __init__(self, num_classes: int = 1000, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.inplanes = width
        self.layer1 = self._layer(width, 3)
        self.layer2 = self._layer(2 * width, 4, 2)
        self.layer3 = self._layer(4 * width, 6, 2)
        self.layer4 = self._layer(8 * width, 3, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32 * width, num_classes)

    def _layer(self, width: int, blocks: int, stride: int = 1) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != width * 4:
            down = nn.Sequential(nn.Conv2d(self.inplanes, width * 4, 1, stride, bias=False), nn.BatchNorm2d(width * 4))
        layers = [Bottleneck(self.inplanes, width, stride, down)]
        self.inplanes = width * 4
        layers += [Bottleneck(self.inplanes, width) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class VGG16(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for filters, n in [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]:
            for _ in range(n):
                layers += [nn.Conv2d(cin, filters, 3, padding=1), nn.ReLU(inplace=True)]
                cin = filters
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        # a small head: the 25088×4096 dense layers say nothing about conv capture
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(512 * 49, 256), nn.ReLU(inplace=True), nn.Linear(256, num_classes))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        ]  # fmt: skip
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(inplace=True))]
        cin = 32
        for t, c, n, s in cfg:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(nn.Sequential(nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


class LeNet5(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 5, padding=2)
        self.c3 = nn.Conv2d(6, 16, 5)
        self.c5 = nn.Conv2d(16, 120, 5)
        self.f6 = nn.Linear(120, 84)
        self.out = nn.Linear(84, 10)

    def forward(self, x):
        x = nn.functional.avg_pool2d(torch.tanh(self.c1(x)), 2)
        x = nn.functional.avg_pool2d(torch.tanh(self.c3(x)), 2)
        return self.out(torch.tanh(self.f6(torch.tanh(self.c5(x)).flatten(1))))


def _init(net: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.1, 0.1)
    return net.eval()


def resnet50(width: int = 64, num_classes: int = 1000) -> nn.Module:
    return _init(ResNet50(num_classes, width))


def vgg16() -> nn.Module:
    return _init(VGG16())


def mobilenet() -> nn.Module:
    return _init(MobileNetV2())


def lenet5() -> nn.Module:
    return _init(LeNet5())


# name → (factory, input shape N,C,H,W)
MODELS = {
    "resnet50": (resnet50, (1, 3, 224, 224)),
    "vgg16": (vgg16, (1, 3, 224, 224)),
    "mobilenet": (mobilenet, (1, 3, 224, 224)),
    "lenet5": (lenet5, (1, 1, 28, 28)),
}
