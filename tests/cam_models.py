"""Small torch CNNs for the explanation tests (CAMs, gradients, activation maximisation)."""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 2, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 2)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != width * 2:
            self.downsample = nn.Sequential(nn.Conv2d(cin, width * 2, 1, stride, bias=False), nn.BatchNorm2d(width * 2))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class TinyResNet(nn.Module):
    """A ResNet-50-shaped miniature: stem, max pool, bottlenecks with downsample branches, global
    average pool, linear classifier (10 classes); ``softmax=True`` ends in a Softmax."""

    def __init__(self, classes: int = 10, softmax: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(Bottleneck(8, 8), Bottleneck(16, 8))
        self.layer2 = nn.Sequential(Bottleneck(16, 12, 2), Bottleneck(24, 12))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, classes)
        self.softmax = softmax

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        x = self.fc(torch.flatten(self.avgpool(x), 1))
        return torch.softmax(x, 1) if self.softmax else x


def tiny_resnet(seed: int = 0, softmax: bool = False) -> nn.Module:
    """Random but non-degenerate weights (BatchNorm statistics perturbed), eval mode."""
    torch.manual_seed(seed)
    net = TinyResNet(softmax=softmax)
    for mod in net.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    return net.eval()
